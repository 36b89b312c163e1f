"""Sweep words -> one run per combination, each checked by `load_config` before anything runs.

The words are Hydra overrides, parsed by Hydra's own grammar (`OverridesParser`): `k=1,5,10`,
`k=range(1,4)`, `k=choice(1,5)`, `lr=1e-3` (one value), and `config=glob(ablations/*)`. Hydra's
`BasicSweeper.split_arguments` forms the cartesian product of the swept values, in command order
(the last key varies fastest). A word without a sweep is passed to every run unchanged, read
exactly as it would be in a single run.

`config` is the one key that is not a config key: its values name experiment files relative to
the folder of the `-c` file (`config=ablations/k1,ablations/k10`), and `glob(...)` lists that
folder's files (every `*.yaml` below it, named without `.yaml`), as Hydra's glob lists the
options of a config group. Each run's folder is `<experiment_dir>/sweep/<key=value,...>`,
`experiment_dir` being the `-c` file's (with the fixed words applied).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from speed.config import ConfigError, instantiate, load_config
from speed.errors import MissingFileError
from speed.run.outputs import folder_name

CONFIG_KEY = "config"  # sweeps over experiment files instead of a config key
SWEEP_FOLDER = "sweep"


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One combination of a sweep.

    Attributes:
        name: the run's folder name, `key=value` of each swept key joined by commas.
        config: the experiment YAML the run loads.
        overrides: its command-line words (fixed words, then this combination's values), without
            `experiment_dir`, which `words` adds.
        params: swept key -> this run's value (YAML types), for tables.
    """

    name: str
    config: Path
    overrides: tuple[str, ...]
    params: dict[str, Any]

    def run_dir(self, sweep_dir: Path) -> Path:
        return sweep_dir / self.name

    def words(self, sweep_dir: Path, extra: Sequence[str] = ()) -> list[str]:
        """The command-line words of this run, its `experiment_dir` last so that it wins."""
        return [*self.overrides, *extra, f"experiment_dir={self.run_dir(sweep_dir)}"]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The runs of one `-m` command: `sweep_dir` is `<experiment_dir>/sweep`; `base` is the `-c`
    file's config with the fixed words (it holds the launcher settings)."""

    config: Path
    phase: str
    sweep_dir: Path
    keys: tuple[str, ...]
    runs: tuple[SweepRun, ...]
    base: DictConfig


def expand_sweep(config_path: str | Path, phase: str, words: Iterable[str]) -> Sweep:
    """Parse the sweep words and list its runs (`load_run_configs` loads and checks them).

    Raises ConfigError (one line) for bad syntax, a sweep that cannot be enumerated, a `config=`
    file that does not exist, or two runs that would share a folder.
    """
    config_path = Path(config_path)
    if not config_path.is_file():
        raise MissingFileError(f"config file not found: {config_path}")
    overrides = _parse(list(words), _ExperimentFiles(config_path.parent))
    fixed = [o for o in overrides if not o.is_sweep_override()]
    swept = [o for o in overrides if o.is_sweep_override()]
    fixed_words = [o.input_line for o in fixed if o.key_or_group != CONFIG_KEY]
    fixed_config = next((o for o in fixed if o.key_or_group == CONFIG_KEY), None)
    default_file = _experiment_file(config_path, fixed_config.value()) if fixed_config else None
    base = load_config(default_file or config_path, phase, fixed_words)
    run_words = [w for w in fixed_words if not w.startswith("experiment_dir=")]
    runs = tuple(
        _make_run(combination, config_path, default_file or config_path, run_words)
        for combination in _combinations(swept)
    )
    _check_unique_names(runs)
    sweep_dir = Path(base.experiment_dir) / SWEEP_FOLDER
    keys = tuple(o.get_key_element() for o in swept)
    return Sweep(config_path, phase, sweep_dir, keys, runs, base)


def load_run_configs(sweep: Sweep, extra: Sequence[str] = ()) -> list[DictConfig]:
    """Every run's resolved config (`extra` words added), checked before any run starts: its keys
    and types (`load_config`) and its diffusion node, built once (so bad SpeeD values such as
    `diffusion.lam=5` fail here). An error names the run: `run 'diffusion.k=0': ...`."""
    configs = []
    for run in sweep.runs:
        try:
            cfg = load_config(run.config, sweep.phase, run.words(sweep.sweep_dir, extra))
            instantiate(cfg.diffusion)
        except ValueError as err:  # ConfigError included
            raise ConfigError(f"run '{run.name}': {err}") from None
        configs.append(cfg)
    return configs


# ---- parsing and expanding ----


def _parse(words: list[str], config_loader: _ExperimentFiles) -> list[Override]:
    """Hydra overrides of the words (the last word for a key wins), parse errors as ConfigError."""
    parser = OverridesParser.create(config_loader=config_loader)
    by_key: dict[str, Override] = {}
    for word in words:
        try:
            (override,) = parser.parse_overrides([word])
        except HydraException as err:
            reason = str(err).splitlines()[1] if "\n" in str(err) else str(err)
            raise ConfigError(
                f"cannot parse override '{word}': {reason.strip()} (sweep syntax: key=a,b,c, "
                "key=range(start,stop[,step]), key=choice(a,b), config=glob(pattern))"
            ) from None
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise ConfigError(
                f"'{word}': an interval cannot be enumerated; list the values (key=a,b,c) "
                "or use range(start,stop,step)"
            )
        by_key[override.get_key_element()] = override  # keeps the key's first position
    return list(by_key.values())


def _combinations(swept: list[Override]) -> list[list[tuple[str, Any]]]:
    """The cartesian product of the swept values as (key, value) pairs, by Hydra's BasicSweeper."""
    if not swept:
        return [[]]
    parser = OverridesParser.create()
    (product,) = BasicSweeper.split_arguments(swept, max_batch_size=None)
    combinations = []
    for words in product:
        parsed = parser.parse_overrides(words)  # Hydra's escaped strings back to values
        combinations.append([(o.get_key_element(), o.value()) for o in parsed])
    return combinations


def _make_run(
    combination: list[tuple[str, Any]], anchor: Path, default_file: Path, fixed_words: list[str]
) -> SweepRun:
    words = [f"{key}={_yaml_text(value)}" for key, value in combination]
    config = dict(combination).get(CONFIG_KEY)
    config_file = default_file if config is None else _experiment_file(anchor, config)
    return SweepRun(
        name=folder_name(words),
        config=config_file,
        overrides=(*fixed_words, *(w for w, (k, _) in zip(words, combination) if k != CONFIG_KEY)),
        params=dict(combination),
    )


def _yaml_text(value: Any) -> str:
    """A value as override text that `load_config` (YAML) reads back as the same value."""
    if isinstance(value, str):
        try:
            parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]), resolve=False)
        except (yaml.YAMLError, OmegaConfBaseException):
            parsed = None
        if parsed == {"v": value}:
            return value
    return json.dumps(value, separators=(",", ": "))


def _check_unique_names(runs: Sequence[SweepRun]) -> None:
    seen: dict[str, SweepRun] = {}
    for run in runs:
        if run.name in seen:
            raise ConfigError(
                f"sweep values {seen[run.name].params} and {run.params} give the same folder "
                f"'{run.name}'; sweep values must differ in letters, digits or ._=+-"
            )
        seen[run.name] = run


# ---- config=: experiment files relative to the -c file's folder ----


def _experiment_file(anchor: Path, name: Any) -> Path:
    """The YAML that `config=<name>` names, relative to the `-c` file's folder."""
    path = anchor.parent / str(name)
    path = path if path.suffix in (".yaml", ".yml") else path.with_name(f"{path.name}.yaml")
    if not path.is_file():
        options = ", ".join(_ExperimentFiles(anchor.parent).names()) or "none"
        raise ConfigError(
            f"config={name}: no file {path}; experiment files next to {anchor.name}: {options}"
        )
    return path


class _ExperimentFiles:
    """What Hydra's `glob(...)` asks a config loader for: the options of a group. The only group
    here is `config`, whose options are the experiment files below `folder` (no `.yaml`)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def names(self) -> list[str]:
        files = self.folder.rglob("*.yaml")
        return sorted(p.relative_to(self.folder).with_suffix("").as_posix() for p in files)

    def get_group_options(self, group: str, results_filter: Any = None) -> list[str]:
        if group != CONFIG_KEY:
            raise ConfigError(
                f"glob(...) lists experiment files and works only for config=glob(...); "
                f"for '{group}' list its values instead ({group}=a,b,c)"
            )
        return self.names()
