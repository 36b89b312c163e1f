"""A study file, read and checked: what to compare (methods as config overrides), how fairly (a
shared setting, or each method's best of a small grid), how long (the budget) and how it is scored.

Every mistake is one `ConfigError` line naming the key and, for a misspelled key, the closest
known one. Relative paths are read from the current folder, as every path in the configs is.
docs/study.md describes each key with a complete example.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from evaluations.evaluate import FEATURE_KINDS, METRICS, PAIR_PARTS, metric_settings
from speed.errors import ConfigError, MissingFileError

STUDY_KEYS = (
    "name", "base", "methods", "reference", "seeds", "fairness", "budget", "score", "overrides",
    "runs", "records", "report", "run_names", "ladder",
)  # fmt: skip
METHOD_KEYS = ("overrides", "overlay", "config", "seeds", "tuned", "sampler", "same_as")
SAME_AS_KEYS = ("study", "method")
FAIRNESS_KEYS = ("grid", "shared_seeds")
BUDGET_KEYS = ("steps", "seconds")
SCORE_KEYS = (
    "sampler", "seed", "reference_images", "curves", "final", "speedup_metric", "choose_by",
    "extractors", "metric_settings", "noise_seeds", "region_images",
)  # fmt: skip
CURVE_KEYS = ("features", "metrics", "every", "samples", "guidance_scale")
FINAL_KEYS = ("samples", "features")
RUN_NAMES = ("method", "overrides")
# Metrics that are shares of the samples (reported to three decimals).
SHARES = frozenset({"class_accuracy", "precision", "recall", *PAIR_PARTS})
# Metrics a higher value of which is better (the others, FID, sFID and KID, are distances, and
# `swapped` counts pairs drawn the wrong way round).
HIGHER_IS_BETTER = SHARES - {"swapped"} | {"inception_score"}
RESERVED = frozenset({"name", "method", "setting", "seed", "final", "seconds", "machine", "date"})


@dataclasses.dataclass(frozen=True)
class Method:
    """One compared method: the experiment file it trains, its override words on top, its seeds
    and whether it takes its setting from the fairness grid (`tuned`) or the common setting."""

    name: str
    config: Path
    overrides: tuple[str, ...]
    values: tuple[tuple[str, Any], ...]  # (key, value) of `overrides`, for folder names
    seeds: tuple[int, ...]
    tuned: bool
    sampler: tuple[tuple[str, Any], ...] = ()  # sampling keys over score.sampler's (its own family)
    same_as: SameAs | None = None  # its runs are another study's method's: their records copied


@dataclasses.dataclass(frozen=True)
class SameAs:
    """A method whose runs are another study's: `method` of the study file `study`. Its config,
    overrides and sampler are that method's; its records are copies of that study's."""

    study: Path
    method: str


@dataclasses.dataclass(frozen=True)
class Curve:
    """Scores during training: `metrics` under `features` of `samples` images every `every`
    steps (and at the last), at the sampler's guidance unless `guidance_scale` is given."""

    name: str
    features: str
    metrics: tuple[str, ...]
    every: int
    samples: int
    guidance_scale: float | None


@dataclasses.dataclass(frozen=True)
class Score:
    sampler: dict[str, Any]  # inference keys of the scoring sampler (sampler, num_steps, ...)
    seed: int  # per-image sampling seeds, the same for every run
    reference_images: int  # real images of the base config's dataset the scores compare with
    curves: tuple[Curve, ...]
    final_samples: int
    final: dict[str, tuple[str, ...]]  # features -> metrics at the last checkpoint
    speedup_metric: tuple[str, str]  # (curve, metric) whose target the speed-ups measure
    choose_by: tuple[str, str]  # (features, metric) of the final scores that pick a setting
    extractors: dict[str, str | None]  # features -> weights file (None: the default)
    metric_settings: dict[str, Any]  # e.g. kid_subset_size
    noise_seeds: tuple[int, ...]  # other sampling seeds, scored on the first run's last step
    region_images: int  # held-out images of the loss-per-region probe (0: no probe)

    @property
    def guidance(self) -> float:
        return float(self.sampler.get("guidance_scale", 1.0))

    def curve(self, name: str) -> Curve:
        return next(c for c in self.curves if c.name == name)

    def final_keys(self) -> list[tuple[str, str]]:
        """(features, record key) of every final score; a metric giving several entries
        (precision_recall, pair_alignment) gives each of its keys."""
        return [(kind, key) for kind, metrics in self.final.items() for key in result_keys(metrics)]


@dataclasses.dataclass(frozen=True)
class Study:
    path: Path
    name: str
    base: Path
    methods: dict[str, Method]
    reference: str
    seeds: tuple[int, ...]
    grid: dict[str, tuple[Any, ...]]  # fairness grid: key -> values (empty: shared settings)
    shared_seeds: bool  # also run every tuned method's other seeds at the common setting
    steps: int  # budget.steps: every run's last step (or its cap, with a time budget)
    score: Score
    overrides: tuple[str, ...]  # words for every run
    runs_dir: Path
    records_dir: Path
    report: Path  # stem of the report's .md, .json and .png
    run_names: str
    seconds: float = 0.0  # budget.seconds: each run's training time (0: steps only)
    ladder: tuple[str, ...] = ()  # methods that each add a part to the one before (which pays)

    @property
    def settings(self) -> list[tuple[tuple[str, Any], ...]]:
        """The fairness grid's settings, in order (one empty setting without a grid)."""
        keys = list(self.grid)
        return [tuple(zip(keys, values)) for values in itertools.product(*self.grid.values())]

    @property
    def checkpoint_every(self) -> int:
        return min(curve.every for curve in self.score.curves)

    @property
    def checkpoint_steps(self) -> list[int]:
        return list(range(self.checkpoint_every, self.steps + 1, self.checkpoint_every))

    def run_steps(self, final: int) -> list[int]:
        """A run's checkpoints when its training ended at `final` (a time budget stops a run
        between the regular checkpoints: its last one is at that step)."""
        return [s for s in self.checkpoint_steps if s < final] + [final]

    def curve_steps(self, curve: Curve, final: int | None = None) -> list[int]:
        """The steps a curve scores: every `curve.every` steps and the last (`final`, default
        budget.steps)."""
        final = self.steps if final is None else final
        return [s for s in self.run_steps(final) if s % curve.every == 0 or s == final]


def load_study(path: str | Path, resolve: bool = True) -> Study:
    """The study file at `path`, checked (`resolve=False`: its `same_as` methods are left
    unread, as when another study's file is read for one of them)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"study file not found: {path}")
    return parse_study(_read_yaml(path), path, resolve)


def _read_yaml(path: Path) -> Any:
    """A YAML file read as the configs are (OmegaConf's YAML: `1e-3` is a number)."""
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"cannot parse {path}: {str(err).splitlines()[0]}") from None


def parse_study(raw: Any, path: Path, resolve: bool = True) -> Study:
    top = _mapping(raw, "the study file", STUDY_KEYS, required=("base", "methods", "budget"))
    name = str(top.get("name", path.stem))
    base = _file(top["base"], "base")
    seeds = _ints(top.get("seeds", [0]), "seeds")
    methods_raw = _mapping(top["methods"], "methods")
    if not methods_raw:
        raise ConfigError("methods: name at least one method (name: {key: value, ...})")
    methods = {
        str(n): _method(str(n), m, base, seeds, path, resolve) for n, m in methods_raw.items()
    }
    reference = str(top.get("reference", next(iter(methods))))
    if reference not in methods:
        raise ConfigError(f"reference: {reference!r} is not a method; one of {list(methods)}")
    grid, shared_seeds = _fairness(top.get("fairness", "shared"))
    for method in methods.values():
        if resolve and method.same_as and (grid or load_study(method.same_as.study, False).grid):
            raise ConfigError(
                f"methods.{method.name}.same_as: a copied method needs fairness: shared in both "
                "studies (the runs of a grid depend on each study's own choices)"
            )
    for method in methods.values():
        if grid and method.tuned and seeds[0] not in method.seeds:
            raise ConfigError(
                f"methods.{method.name}.seeds: a tuned method runs the first seed ({seeds[0]}), "
                "on which its setting is chosen"
            )
    budget = _mapping(top["budget"], "budget", BUDGET_KEYS)
    if "steps" not in budget:
        raise ConfigError(
            "budget.steps is required, with budget.seconds too: the most steps a run takes "
            "(its checkpoints and score curves are laid on them)"
        )
    steps = _positive_int(budget["steps"], "budget.steps")
    seconds = _positive_number(budget.get("seconds"), "budget.seconds")
    score = _score(top.get("score", {}))
    for curve in score.curves:
        if curve.every % min(c.every for c in score.curves) or steps % curve.every:
            raise ConfigError(
                f"score.curves.{curve.name}.every={curve.every}: budget.steps ({steps}) and "
                "every curve's interval must be multiples of the smallest interval"
            )
    runs_dir = Path(top.get("runs", f"runs/studies/{name}"))
    ladder = _ladder(top.get("ladder", []), methods)
    run_names = str(top.get("run_names", "method"))
    if run_names not in RUN_NAMES:
        raise ConfigError(f"run_names: {run_names!r}; choose one of {list(RUN_NAMES)}")
    return Study(
        path=path,
        name=name,
        base=base,
        methods=methods,
        reference=reference,
        seeds=seeds,
        grid=grid,
        shared_seeds=shared_seeds,
        steps=steps,
        score=score,
        overrides=_words(top.get("overrides", {}), "overrides"),
        runs_dir=runs_dir,
        records_dir=Path(top.get("records", runs_dir / "records")),
        report=Path(top.get("report", runs_dir / "report")),
        run_names=run_names,
        seconds=seconds,
        ladder=ladder,
    )


# ---- the parts ----


def _method(
    name: str, raw: Any, base: Path, seeds: tuple[int, ...], path: Path, resolve: bool = True
) -> Method:
    """A method: a mapping of overrides, an overlay file, or the full form with METHOD_KEYS."""
    where = f"methods.{name}"
    if isinstance(raw, str):
        raw = {"overlay": raw}
    elif raw is None:
        raw = {}
    raw = _mapping(raw, where)
    if not any(key in raw for key in METHOD_KEYS):
        raw = {"overrides": raw}
    full = _mapping(raw, where, METHOD_KEYS)
    if "same_as" in full:
        return _same_as(name, full, seeds, path, resolve)
    values = _mapping(full.get("overrides", {}), f"{where}.overrides")
    if "overlay" in full:  # the overlay's top-level nodes, then the overrides (they win)
        overlay = _file(full["overlay"], f"{where}.overlay")
        values = {**_mapping(_read_yaml(overlay) or {}, str(overlay)), **values}
    config = _file(full["config"], f"{where}.config") if "config" in full else base
    method_seeds = _ints(full.get("seeds", list(seeds)), f"{where}.seeds")
    if not set(method_seeds) <= set(seeds):
        raise ConfigError(f"{where}.seeds: {list(method_seeds)} must be among seeds {list(seeds)}")
    sampler = _mapping(full.get("sampler", {}), f"{where}.sampler")
    if "guidance_scale" in sampler:
        raise ConfigError(
            f"{where}.sampler.guidance_scale: guidance is the study's, the same for every method "
            "(score.sampler, or a curve's guidance_scale)"
        )
    return Method(
        name=name,
        config=config,
        overrides=tuple(f"{k}={override_text(v)}" for k, v in values.items()),
        values=tuple(values.items()),
        seeds=method_seeds,
        tuned=bool(full.get("tuned", True)),
        sampler=tuple(sampler.items()),
    )


def _same_as(name: str, full: dict, seeds: tuple[int, ...], path: Path, resolve: bool) -> Method:
    """A method whose runs are another study's method's (`same_as: {study: FILE, method: NAME}`):
    its config, overrides and sampler are that method's, its seeds (default: this study's) must be
    among that method's."""
    where = f"methods.{name}"
    extra = [key for key in full if key not in ("same_as", "seeds")]
    if extra:
        raise ConfigError(
            f"{where}: a same_as method takes its config, overrides and sampler from the other "
            f"study's method; remove {', '.join(extra)} (or drop same_as and train it here)"
        )
    ref = _mapping(full["same_as"], f"{where}.same_as", SAME_AS_KEYS, required=SAME_AS_KEYS)
    same_as = SameAs(Path(str(ref["study"])), str(ref["method"]))
    method_seeds = _ints(full.get("seeds", list(seeds)), f"{where}.seeds")
    if not set(method_seeds) <= set(seeds):
        raise ConfigError(f"{where}.seeds: {list(method_seeds)} must be among seeds {list(seeds)}")
    if not resolve:  # another study's copied method: only the name is needed
        return Method(name, path, (), (), method_seeds, True, (), same_as)
    if not same_as.study.is_file():
        raise ConfigError(f"{where}.same_as.study: no study file {same_as.study}")
    if same_as.study.resolve() == path.resolve():
        raise ConfigError(f"{where}.same_as.study: {same_as.study} is this study's own file")
    other = load_study(same_as.study, resolve=False)
    if same_as.method not in other.methods:
        raise ConfigError(
            f"{where}.same_as.method: {same_as.method!r} is not a method of {same_as.study}; "
            f"one of {list(other.methods)}"
        )
    source = other.methods[same_as.method]
    if source.same_as is not None:
        raise ConfigError(
            f"{where}.same_as: {same_as.study}'s {same_as.method} is itself a copy of "
            f"{source.same_as.study}'s {source.same_as.method}; name that one"
        )
    missing = [s for s in method_seeds if s not in source.seeds]
    if missing:
        raise ConfigError(
            f"{where}: seed {missing[0]} is not run by {same_as.study}'s {same_as.method} (its "
            f"seeds {list(source.seeds)}); list this method's seeds among them"
        )
    return dataclasses.replace(source, name=name, seeds=method_seeds, same_as=same_as)


def _ladder(raw: Any, methods: dict[str, Method]) -> tuple[str, ...]:
    """`ladder`: two or more distinct methods, each adding a part to the one before it."""
    if not isinstance(raw, list) or any(not isinstance(m, str) for m in raw):
        raise ConfigError("ladder: a list of method names, e.g. [baseline, sit, sit_logit_normal]")
    unknown = [m for m in raw if m not in methods]
    if unknown:
        raise ConfigError(f"ladder: {unknown} not among the methods {list(methods)}")
    if raw and (len(raw) < 2 or len(set(raw)) != len(raw)):
        raise ConfigError(f"ladder: {raw}: name two or more methods, each once")
    return tuple(raw)


def _fairness(raw: Any) -> tuple[dict[str, tuple], bool]:
    if raw == "shared":
        return {}, False
    fairness = _mapping(raw, "fairness (shared, or {grid: {key: [values]}})", FAIRNESS_KEYS)
    grid = _mapping(fairness.get("grid", {}), "fairness.grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"fairness.grid.{key}: a list of values to try, got {values!r}")
    return {k: tuple(v) for k, v in grid.items()}, bool(fairness.get("shared_seeds", False))


def _score(raw: Any) -> Score:
    score = _mapping(raw, "score", SCORE_KEYS)
    sampler = _mapping(score.get("sampler", {}), "score.sampler")
    curves_raw = _mapping(score.get("curves", {"curve": {}}), "score.curves")
    curves = tuple(_curve(str(n), c) for n, c in curves_raw.items())
    if not curves:
        raise ConfigError("score.curves: name at least one curve (curve: {every: N, ...})")
    final = _mapping(score.get("final", {}), "score.final", FINAL_KEYS)
    final_features = {
        kind: _metrics(m, f"score.final.features.{kind}")
        for kind, m in _mapping(
            final.get("features", {"domain": ["fid"]}), "score.final.features"
        ).items()  # fmt: skip
    }
    for kind in final_features:
        _choice(kind, FEATURE_KINDS, f"score.final.features.{kind}")
    first = curves[0]
    speedup = _dotted(score.get("speedup_metric", f"{first.name}.{first.metrics[0]}"),
                      "score.speedup_metric")  # fmt: skip
    if speedup[0] not in {c.name for c in curves} or speedup[1] not in result_keys(
        next(c for c in curves if c.name == speedup[0]).metrics
    ):
        raise ConfigError(f"score.speedup_metric: {'.'.join(speedup)} is no scored curve metric")
    kind, metrics = next(iter(final_features.items()))
    choose_by = _dotted(score.get("choose_by", f"{kind}.{metrics[0]}"), "score.choose_by")
    if choose_by[1] not in result_keys(final_features.get(choose_by[0], ())):
        raise ConfigError(f"score.choose_by: {'.'.join(choose_by)} is no final score")
    extractors = _mapping(score.get("extractors", {}), "score.extractors", FEATURE_KINDS)
    settings = _mapping(score.get("metric_settings", {}), "score.metric_settings",
                        tuple(metric_settings()))  # fmt: skip
    return Score(
        sampler=dict(sampler),
        seed=int(score.get("seed", 0)),
        reference_images=_positive_int(
            score.get("reference_images", 1000), "score.reference_images"
        ),  # fmt: skip
        curves=curves,
        final_samples=_positive_int(final.get("samples", first.samples), "score.final.samples"),
        final=final_features,
        speedup_metric=speedup,
        choose_by=choose_by,
        extractors={k: None if v is None else str(v) for k, v in extractors.items()},
        metric_settings=dict(settings),
        noise_seeds=_ints(score.get("noise_seeds", []), "score.noise_seeds", empty=True),
        region_images=int(score.get("region_images", 0)),
    )


def _curve(name: str, raw: Any) -> Curve:
    where = f"score.curves.{name}"
    if name in RESERVED:
        raise ConfigError(f"{where}: '{name}' is a record field; give the curve another name")
    curve = _mapping(raw, where, CURVE_KEYS, required=("every",))
    features = str(curve.get("features", "domain"))
    _choice(features, FEATURE_KINDS, f"{where}.features")
    guidance = curve.get("guidance_scale")
    return Curve(
        name=name,
        features=features,
        metrics=_metrics(curve.get("metrics", ["fid"]), f"{where}.metrics"),
        every=_positive_int(curve["every"], f"{where}.every"),
        samples=_positive_int(curve.get("samples", 256), f"{where}.samples"),
        guidance_scale=None if guidance is None else float(guidance),
    )


def result_keys(metrics) -> list[str]:
    """The record keys the metrics give (precision_recall gives two, pair_alignment five)."""
    return [key for metric in metrics for key in METRICS[metric].labels(metric)]


def _metrics(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: a list of metrics, e.g. [fid, class_accuracy]")
    for metric in raw:
        _choice(metric, tuple(METRICS), where)
    return tuple(raw)


# ---- values ----


def override_text(value: Any) -> str:
    """A value as override text that the config loader reads back as the same value."""
    if isinstance(value, str):
        try:
            parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))["v"]
        except (yaml.YAMLError, OmegaConfBaseException):
            parsed = None
        return value if parsed == value else json.dumps(value)
    return json.dumps(value, separators=(",", ": "))


def _words(raw: Any, where: str) -> tuple[str, ...]:
    return tuple(f"{k}={override_text(v)}" for k, v in _mapping(raw, where).items())


def _mapping(raw: Any, where: str, known: tuple[str, ...] | None = None, required=()) -> dict:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
    if known is not None:
        for key in raw:
            _choice(key, known, where, what="key")
    for key in required:
        if key not in raw:
            raise ConfigError(f"{where}: '{key}' is required")
    return dict(raw)


def _choice(value: Any, options: tuple[str, ...], where: str, what: str = "value") -> None:
    if value not in options:
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; choose from {list(options)}"
        raise ConfigError(f"{where}: unknown {what} {value!r}{hint}")


def _dotted(raw: Any, where: str) -> tuple[str, str]:
    first, dot, second = str(raw).partition(".")
    if not dot or not first or not second:
        raise ConfigError(f"{where}: write it as <name>.<metric>, got {raw!r}")
    return first, second


def _file(raw: Any, where: str) -> Path:
    path = Path(str(raw))
    if not path.is_file():
        raise MissingFileError(f"{where}: no file {path} (paths are read from the current folder)")
    return path


def _ints(raw: Any, where: str, empty: bool = False) -> tuple[int, ...]:
    if not isinstance(raw, list) or not (raw or empty) or not all(isinstance(v, int) for v in raw):
        kind = "list" if empty else "non-empty list"
        raise ConfigError(f"{where}: a {kind} of integers, got {raw!r}")
    if len(set(raw)) != len(raw):
        raise ConfigError(f"{where}: {raw} repeats a value")
    return tuple(raw)


def _positive_int(raw: Any, where: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise ConfigError(f"{where}: a positive integer, got {raw!r}")
    return raw


def _positive_number(raw: Any, where: str) -> float:
    """A positive, finite number of seconds; 0.0 when absent."""
    if raw is None:
        return 0.0
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw < float("inf"):
        raise ConfigError(f"{where}: a positive number of seconds, got {raw!r}")
    return float(raw)
