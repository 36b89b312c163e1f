"""What a study runs and in which order: its runs as one sweep (a folder each), the stages that pick
the next runs from the finished ones, and the finished runs' records.

A run is (method, setting, seed); a setting is one point of the fairness grid (empty without one).
The stages, each after the one before:
  1. every tuned method at every setting, on the first seed (the fairness grid: each method then
     takes the setting with the best final score of its own first-seed runs);
  2. the tuned methods' other seeds, each at its chosen setting;
  3. with `shared_seeds`, the other seeds of every tuned method at the common setting (the one
     most tuned methods chose), where that is not its own: all compared at shared settings too;
  4. the untuned methods (ablations, parts of a method), all their seeds at the common setting.
Without a grid there is one setting and every run is known from the start.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from speed.config import load_config
from speed.errors import ConfigError
from speed.run import RunDir
from speed.study.spec import HIGHER_IS_BETTER, Method, Study, load_study, override_text
from speed.sweep.expand import SWEEP_FOLDER, Sweep, SweepRun, folder_name
from speed.utils.atomic import atomic_write
from speed.utils.machine import device_name

Setting = tuple[tuple[str, Any], ...]
# The config keys that name where a run is written: the one place two studies' copies of a run may
# differ (`check_same_as`).
WHERE_KEYS = ("experiment_dir",)
# The score keys of optional probes: they add a field to a record (PROBE_FIELDS) and change none of
# its scores, so two studies sharing runs may differ there; a copy keeps a probe only where this
# study asks for it.
PROBE_FIELDS = {"noise_seeds": "noise_probe", "region_images": "region_losses"}
PROBE_KEYS = tuple(PROBE_FIELDS)


@dataclasses.dataclass(frozen=True)
class StudyRun:
    """One (method, setting, seed) of a study. `source`: for a `same_as` method, the other study's
    run it is and that study's sweep folder, where its checkpoints and samples are (its record is
    copied here under this study's run name)."""

    sweep_run: SweepRun
    method: str
    setting: Setting
    seed: int
    source: tuple[SweepRun, Path] | None = None

    @property
    def name(self) -> str:
        return self.sweep_run.name

    def files(self, sweep: Sweep) -> tuple[SweepRun, Path]:
        """(the run that made this run's files, its sweep folder)."""
        return self.source or (self.sweep_run, sweep.sweep_dir)

    def run_dir(self, sweep: Sweep) -> Path:
        """The folder of this run's checkpoints and samples (another study's for a copy)."""
        run, folder = self.files(sweep)
        return run.run_dir(folder)

    def words(self, sweep: Sweep, extra: Sequence[str] = ()) -> list[str]:
        """The command-line words that load this run's config, pointed at its folder."""
        run, folder = self.files(sweep)
        return run.words(folder, extra)

    @property
    def key(self) -> tuple[str, Setting, int]:
        return self.method, self.setting, self.seed


def fixed_words(study: Study) -> list[str]:
    """The words every run of the study trains with (before its method's)."""
    return [
        f"max_training_steps={study.steps}",
        *([f"max_training_seconds={study.seconds:g}"] if study.seconds else []),
        f"ckpt_every={study.checkpoint_every}",
        "ckpt_keep=0",
        "sample_every=0",
        "wandb=disabled",
        *study.overrides,
    ]


def final_step(study: Study, run_dir: Path) -> int:
    """The step at which a run's training ended: budget.steps, or where budget.seconds ran out
    first."""
    stopped = RunDir(run_dir).time_budget_step(study.seconds) if study.seconds else None
    return study.steps if stopped is None else stopped


def study_sweep(study: Study) -> Sweep:
    """Every (method, setting, seed) the study may run, as one sweep under `<runs>/sweep/`."""
    runs_dir = study.runs_dir.resolve()
    fixed = fixed_words(study)
    runs = []
    for method in study.methods.values():
        for setting in study.settings:
            for seed in method.seeds:
                runs.append(_sweep_run(study, method, setting, seed, fixed))
    base = load_config(study.base, "train", [*fixed, f"experiment_dir={runs_dir}"])
    keys = ("method", *study.grid, "seed")
    return Sweep(study.base, "train", runs_dir / SWEEP_FOLDER, keys, tuple(runs), base)


def _sweep_run(study: Study, method: Method, setting: Setting, seed: int, fixed) -> SweepRun:
    setting_words = [f"{key}={override_text(value)}" for key, value in setting]
    named_by = method.overrides if study.run_names == "overrides" else (f"method={method.name}",)
    return SweepRun(
        name=folder_name([*named_by, *setting_words, f"seed={seed}"]),
        config=method.config,
        overrides=(*fixed, *method.overrides, *setting_words, f"seed={seed}"),
        params={"method": method.name, **dict(setting), "seed": seed},
    )


def study_runs(study: Study, sweep: Sweep) -> dict[tuple, StudyRun]:
    """(method, setting, seed) -> the sweep's run (with its `source` for a `same_as` method)."""
    sources = {
        key: (run, other.runs_dir.resolve() / SWEEP_FOLDER)
        for key, (run, other) in _copied_runs(study).items()
    }
    runs = {}
    for sweep_run in sweep.runs:
        params = dict(sweep_run.params)
        method, seed = params.pop("method"), params.pop("seed")
        setting = tuple((key, params[key]) for key in study.grid)
        key = (method, setting, seed)
        runs[key] = StudyRun(sweep_run, method, setting, seed, sources.get(key))
    return runs


def by_key(runs: dict[tuple, StudyRun], records: dict[str, dict]) -> dict[tuple, dict]:
    """(method, setting, seed) -> record, of the runs that have one."""
    return {key: records[run.name] for key, run in runs.items() if run.name in records}


# ---- choosing settings ----


def final_score(study: Study, record: dict) -> float:
    """The final score that ranks settings, as a loss (lower is better)."""
    kind, metric = study.score.choose_by
    value = record["final"][kind][metric]
    return -value if metric in HIGHER_IS_BETTER else value


def choose_setting(study: Study, cells: dict[tuple, dict], method: str) -> Setting | None:
    """The method's setting: the best final score of its first-seed runs over the grid (the first
    of equal ones); None until all of them have finished. Without a grid, its one setting."""
    settings = study.settings
    if len(settings) == 1:
        return settings[0]
    finals = {}
    for setting in settings:
        record = cells.get((method, setting, study.seeds[0]))
        if record is None:
            return None
        finals[setting] = final_score(study, record)
    return min(finals, key=finals.get)


def common_setting(study: Study, chosen: dict[str, Setting | None]) -> Setting | None:
    """The setting most tuned methods chose (ties: the smaller values, else the grid's first);
    None while any is undecided."""
    if any(setting is None for setting in chosen.values()):
        return None
    votes = list(chosen.values())
    settings = study.settings
    try:
        return min(settings, key=lambda s: (-votes.count(s), tuple(v for _, v in s)))
    except TypeError:  # values that do not order (strings beside numbers)
        return min(settings, key=lambda s: (-votes.count(s), settings.index(s)))


def chosen_settings(study: Study, cells: dict[tuple, dict]) -> dict[str, Setting | None]:
    """Tuned method -> its chosen setting (None until chosen)."""
    return {m.name: choose_setting(study, cells, m.name) for m in study.methods.values() if m.tuned}


# ---- the stages ----


def stages(study: Study, runs: dict[tuple, StudyRun], records: dict) -> Iterator[list | None]:
    """The study's runs in order, stage by stage; a None stands where runs depend on unfinished
    ones (not known yet)."""
    first, later = study.seeds[0], study.seeds[1:]
    tuned = [m for m in study.methods.values() if m.tuned]
    untuned = [m for m in study.methods.values() if not m.tuned]
    yield [runs[(m.name, s, first)] for s in study.settings for m in tuned if first in m.seeds]
    cells = by_key(runs, records)
    chosen = chosen_settings(study, cells)
    yield [
        runs[(m.name, chosen[m.name], seed)]
        for seed in later
        for m in tuned
        if chosen[m.name] is not None and seed in m.seeds
    ]
    common = common_setting(study, chosen) if tuned else study.settings[0]
    if common is None:
        yield None  # the runs at a setting not chosen yet, and what follows
        return
    if study.shared_seeds:
        yield [
            runs[(m.name, common, s)]
            for s in later
            for m in tuned
            if chosen[m.name] != common and s in m.seeds
        ]
    yield [runs[(m.name, common, s)] for s in study.seeds for m in untuned if s in m.seeds]


def pending(study: Study, runs, records) -> tuple[list[StudyRun], bool]:
    """Runs not yet recorded (or recorded short of a raised budget: `short_of_budget`), in study
    order, and whether later stages still wait on them."""
    known = list(stages(study, runs, records))
    todo = [
        r
        for stage in known
        if stage is not None
        for r in stage
        if r.name not in records or short_of_budget(study, records[r.name])
    ]
    return todo, None in known


def short_of_budget(study: Study, record: dict) -> bool:
    """Whether a finished run was recorded at fewer steps than the study's `budget.steps` now asks
    (the budget was raised after it ran): a run this study trained (not a `same_as` copy) under a
    steps budget alone. It trains on from its last checkpoint and is scored again; the scores of
    its earlier checkpoints come from the cache."""
    return not study.seconds and "copied_from" not in record and record["steps"] < study.steps


STEADY_LR = ("constant", "warmup")  # lr schedules that do not depend on the run's length


def check_extension(name: str, cfg, recorded_steps: int) -> None:
    """Refuse to train a run recorded at `recorded_steps` on to a raised budget when its lr
    schedule anneals over `max_training_steps`: the longer run would differ from one trained
    that long from the start."""
    if cfg.lr_schedule not in STEADY_LR and not cfg.lr_anneal_steps:
        raise ConfigError(
            f"{name}: recorded at {recorded_steps} steps under lr_schedule={cfg.lr_schedule}, "
            f"which anneals over max_training_steps; trained on to {cfg.max_training_steps} it "
            "would not be the run trained that long from the start: give the longer budget its "
            "own study (another `runs:` and `records:`), or fix lr_anneal_steps in the overrides"
        )


# ---- the records of finished runs ----


def machine() -> str:
    """The device that trained (`speed.utils.machine.device_name`); torch, threads."""
    device = device_name("cuda" if torch.cuda.is_available() else "cpu")
    return f"{device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def setting_text(setting) -> str:
    """A setting for tables and titles: 'optimizer.lr 0.001' (or 'shared settings')."""
    pairs = dict(setting).items()
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in pairs) or (
        "shared settings"
    )


TIMING_FILE = "timing.json"  # beside the records: the methods' costs on one box (--time)


def load_records(folder: Path) -> dict[str, dict]:
    """Run name -> finished record, of every record in `folder` (not its `timing.json`)."""
    paths = [p for p in sorted(Path(folder).glob("*.json")) if p.name != TIMING_FILE]
    records = (json.loads(p.read_text()) for p in paths)
    return {record["name"]: record for record in records}


def write_record(folder: Path, record: dict) -> Path:
    path = Path(folder) / f"{record['name']}.json"
    return atomic_write(path, json.dumps(record, indent=2) + "\n")


def probed_runs(study: Study, runs: dict, records: dict, methods=None) -> dict[str, tuple]:
    """method -> (its first-seed run, setting, whether that setting is the chosen one), for each
    of `methods` (default: the tuned ones) with a finished first-seed run: the run the probes
    (hand-offs, loss per region, samples) look at."""
    cells = by_key(runs, records)
    first = study.seeds[0]
    names = methods or [m.name for m in study.methods.values() if m.tuned]
    common = common_setting(study, chosen_settings(study, cells))
    out = {}
    for name in names:
        chosen = choose_setting(study, cells, name) if study.methods[name].tuned else common
        done = [s for s in study.settings if (name, s, first) in cells]
        if chosen is not None or done:
            setting = chosen if chosen is not None else done[0]
            if (name, setting, first) in cells:
                out[name] = (runs[(name, setting, first)], setting, chosen is not None)
    return out


def open_study(path, runs_dir=None):
    """(study, sweep, runs, records) of the study file at `path` (`runs_dir`: its runs folder, if
    not the file's), its copied methods checked to be the other studies' runs."""
    study = load_study(path)
    check_same_as(study)
    if runs_dir is not None:
        study = dataclasses.replace(study, runs_dir=Path(runs_dir))
    sweep = study_sweep(study)
    return study, sweep, study_runs(study, sweep), load_records(study.records_dir)


def probed_or_refuse(study: Study, runs: dict, records: dict, methods=None) -> dict[str, tuple]:
    """`probed_runs`, refusing (one line) a study without a finished first-seed run to probe."""
    probed = probed_runs(study, runs, records, methods)
    if not probed:
        raise ConfigError(f"no finished first-seed run to probe in {study.records_dir}")
    return probed


# ---- methods whose runs are another study's (same_as) ----


def _copied_runs(study: Study) -> dict[tuple, tuple[SweepRun, Study]]:
    """(method, setting, seed) of each run of a `same_as` method -> (the other study's run it is,
    that study)."""
    copied = {}
    for method, other, source in _same_as_methods(study):
        for setting in study.settings:
            for seed in method.seeds:
                run = _sweep_run(other, source, setting, seed, fixed_words(other))
                copied[(method.name, setting, seed)] = (run, other)
    return copied


def copy_sources(study: Study) -> dict[tuple, Path]:
    """(method, setting, seed) of each run of a `same_as` method -> the path of the record of the
    other study's run it is (present or not yet)."""
    return {
        key: other.records_dir / f"{run.name}.json"
        for key, (run, other) in _copied_runs(study).items()
    }


def check_same_as(study: Study) -> None:
    """Refuse (one line naming the key) a `same_as` method whose runs would not be the other
    study's: both studies' score blocks must be equal but for PROBE_KEYS, and each run's training
    config, composed as either study would train it, equal but for WHERE_KEYS."""
    for method, other, source in _same_as_methods(study):
        where = f"methods.{method.name}.same_as"
        there = f"{other.path}'s {source.name}"
        diff = first_difference(_score_keys(study), _score_keys(other))
        if diff:
            key, here, theirs = diff
            raise ConfigError(
                f"{where}: score.{key} is {here!r} here and {theirs!r} in {other.path}: its "
                "records were scored otherwise"
            )
        for setting in study.settings:
            for seed in method.seeds:
                mine = _train_keys(_sweep_run(study, method, setting, seed, fixed_words(study)))
                theirs = _train_keys(_sweep_run(other, source, setting, seed, fixed_words(other)))
                diff = first_difference(mine, theirs)
                if diff:
                    raise ConfigError(
                        f"{where}: seed {seed} would train with {diff[0]}={diff[1]!r} here and "
                        f"{diff[2]!r} in {there} (only {', '.join(WHERE_KEYS)} may differ)"
                    )


def first_difference(mine: dict, theirs: dict) -> tuple[str, Any, Any] | None:
    """(key, value here, value there) of the first key, in order, where two flat dicts differ
    (a missing key's value: '<absent>')."""
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key, "<absent>"), theirs.get(key, "<absent>")
        if a != b:
            return key, a, b
    return None


def _same_as_methods(study: Study) -> Iterator[tuple[Method, Study, Method]]:
    """(method, the other study, its method) of each `same_as` method."""
    others: dict[Path, Study] = {}
    for method in study.methods.values():
        if method.same_as is not None:
            path = method.same_as.study
            if path not in others:
                others[path] = load_study(path)
            yield method, others[path], others[path].methods[method.same_as.method]


def _train_keys(run: SweepRun) -> dict[str, Any]:
    """A run's composed training config as dotted keys, without WHERE_KEYS."""
    cfg = load_config(run.config, "train", [*run.overrides, "experiment_dir=same_as"])
    values = _flat(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in values.items() if k.split(".")[0] not in WHERE_KEYS}


def _score_keys(study: Study) -> dict[str, Any]:
    """A study's score block as dotted keys (curves by name), without PROBE_KEYS."""
    score = {k: v for k, v in dataclasses.asdict(study.score).items() if k not in PROBE_KEYS}
    score["curves"] = {curve.pop("name"): curve for curve in score["curves"]}
    return _flat(score)


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
