"""Load, merge, validate and instantiate experiment configs.

Merge order (a contract; later layers win, dicts merge key by key, anything else is replaced):
  1. the root defaults of `speed.config_schema.RootConfig`;
  2. every `base.yaml` from the `configs/` root (the nearest ancestor folder named `configs`, else
     the named file's own folder) down to the named file's folder, outermost first;
  3. the named file;
  4. command-line overrides addressing a phase subtree (`inference.guidance_scale=2`);
  5. the current phase's subtree (`train:`, `inference:` or `sample:`) lifted onto the root; all
     phase subtrees are then dropped, so the result is flat: root keys plus nodes;
  6. command-line overrides addressing the root (`guidance_scale=1.5`): the root form wins;
  7. `${...}` interpolations, resolved last (`${oc.env:VAR,default}` and `${now:%Y-%m-%d}` work;
     `now` is read per process, so don't use it where several ranks must agree on a path).

Node replacement: when a layer gives a node (`model`, `diffusion`, ...) a `_target_` different from
the one it has so far, the node's earlier keys are dropped rather than merged (except the runner
keys of `speed.config_schema.NODES`, such as `data.batch_size`), so a variant file can switch
`model` from DiT to the UNet without inheriting DiT's arguments.

Validation follows `speed.config_schema`: root keys have types; a node's keys are its `_target_`'s
parameters (anything, if it takes **kwargs) plus its runner keys, typed by their annotations.
Each file and the command line are checked as they are merged, so an error says where the key came
from; the resolved config is checked again. Every user error is a one-line `ConfigError`.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
import inspect
import json
import os
import re
import warnings
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra.utils
import yaml
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from speed.config_schema import (
    HYDRA_KEYS,
    NODES,
    PHASES,
    ROOT_TYPES,
    out_of_range,
    root_defaults,
    type_mismatch,
)
from speed.errors import ConfigError, MissingFileError, UserError
from speed.utils.atomic import atomic_write
from speed.utils.bounded_yaml import load_yaml

if not OmegaConf.has_resolver("now"):
    OmegaConf.register_new_resolver(
        "now", lambda pattern: datetime.now().strftime(pattern), use_cache=True
    )


# ---- public API ----


def load_config(
    config_path: str | os.PathLike, phase: str, overrides: Iterable[str] = ()
) -> DictConfig:
    """The resolved, validated, read-only DictConfig of `config_path` for `phase`.

    Args:
        config_path: the experiment YAML, e.g. configs/image/animals/faster.yaml.
        phase: the phase it is loaded for; only "train", "inference" and "sample" have a
            subtree to lift, any other name (e.g. "config", "extract") lifts nothing.
        overrides: command-line words `key=value` or `a.b.c=value`, values parsed as YAML.
    """
    phase_layer, root_layer = _parse_overrides(overrides)
    layers = [(_read_yaml(path), f"in {_display(path)}") for path in find_config_files(config_path)]
    layers.append((phase_layer, "command line"))
    merged = root_defaults()
    for i, (layer, where) in enumerate(layers):
        later = [other for other, _ in layers[i + 1 :]] + [root_layer]
        merged = _apply_layer(merged, layer, where, _later_targets(later))
    merged = _lift_phase(merged, phase)
    merged = _apply_layer(merged, root_layer, "command line")
    return _finalize(merged)


def find_config_files(config_path: str | os.PathLike) -> list[Path]:
    """The files merged for `config_path`, in merge order (all `base.yaml`s, then the file)."""
    path = Path(config_path)
    if not path.is_file():
        raise MissingFileError(f"config file not found: {config_path}")
    path = path.resolve()
    folders = [path.parent, *path.parent.parents]
    root = next((i for i, folder in enumerate(folders) if folder.name == "configs"), 0)
    files = [folder / "base.yaml" for folder in reversed(folders[: root + 1])]
    files = [file for file in files if file.is_file()]
    return files if files and files[-1] == path else [*files, path]


def instantiate(node, **kwargs):
    """Build the object a `_target_` node describes; `kwargs` add to or override its keys.

    Lists and dicts reach the target as Python lists and dicts. The target's constructor checks
    its arguments (a bad value is a ValueError naming it): that ValueError becomes a ConfigError
    naming the node, and a FileNotFoundError a MissingFileError, the cause chained; any other
    error raised by the target propagates unchanged (not wrapped by Hydra).
    """
    name = node._get_full_key(None) if OmegaConf.is_config(node) else ""
    name = name or "node"
    target = node.get("_target_") if hasattr(node, "get") else None
    if not isinstance(target, str):
        raise ConfigError(f"config node '{name}' has no _target_ to instantiate")
    _import_target(target, f"{name}._target_", where=None)
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserError) and env_hint(str(cause)) != str(cause):
            raise type(cause)(env_hint(str(cause))) from cause
        if isinstance(cause, UserError) or cause is None:
            raise (cause or ConfigError(f"{name}: {_one_line(err)}")) from None
        if isinstance(cause, (ValueError, FileNotFoundError)):
            message = _one_line(cause)
            message = message if message.startswith(name) else f"{name}: {message}"
            kind = ConfigError if isinstance(cause, ValueError) else MissingFileError
            raise kind(env_hint(message)) from cause
        raise cause from None


def check_values(cfg: DictConfig) -> None:
    """Value checks that need an object built: the diffusion node (SpeeD's k, lam, tau ranges),
    as train and -m check them, so `-p config` refuses what a run would refuse."""
    if "diffusion" in cfg:
        instantiate(cfg.diffusion)


def config_to_yaml(cfg) -> str:
    """The config as YAML text, interpolations resolved (what `-p config` prints)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write(path, config_to_yaml(cfg))


# ---- reading and merging ----


def _read_yaml(path: Path) -> dict:
    value = load_yaml(path.read_text(), _display(path))  # aliases and nesting bounded
    if not isinstance(value, dict | None):
        raise ConfigError(f"{_display(path)} must hold a mapping of keys at the top level")
    try:
        return OmegaConf.to_container(OmegaConf.create(value or {}), resolve=False)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse {_display(path)}: {_one_line(err)}") from None


def _parse_overrides(words: Iterable[str]) -> tuple[dict, dict]:
    """Command-line words -> (layer of phase-subtree overrides, layer of root overrides)."""
    phase_layer, root_layer = {}, {}
    for word in words:
        key, sep, _ = word.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"command-line word '{word}' is not an override; write key=value "
                "(e.g. guidance_scale=1.5 or inference.num_steps=50)"
            )
        try:
            load_yaml(word.partition("=")[2], f"override '{word}'")  # bounded, before OmegaConf
            parsed = OmegaConf.to_container(OmegaConf.from_dotlist([word]), resolve=False)
        except (yaml.YAMLError, OmegaConfBaseException) as err:
            raise ConfigError(f"cannot parse override '{word}': {_one_line(err)}") from None
        if key.split(".")[0] in PHASES:
            phase_layer = _deep_merge(phase_layer, parsed)
        else:
            root_layer = _deep_merge(root_layer, parsed)
    return phase_layer, root_layer


def _deep_merge(base: dict, layer: dict) -> dict:
    """`layer` over `base`: dicts merge key by key, any other value replaces."""
    merged = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _concrete_target(node: Any) -> str | None:
    """A node's `_target_` if it is set to a plain string (not ??? or an interpolation)."""
    target = node.get("_target_") if isinstance(node, dict) else None
    return None if not isinstance(target, str) or _is_deferred(target) else target


def _replace_switched_nodes(base: dict, layer: dict) -> None:
    """Drop the keys of nodes in `base` whose `_target_` `layer` changes (runner keys stay)."""
    for name, runner_keys in NODES.items():
        old, new = _concrete_target(base.get(name)), _concrete_target(layer.get(name))
        if old is not None and new is not None and old != new:
            base[name] = {k: v for k, v in base[name].items() if k in runner_keys}


def _merge_layer(base: dict, layer: dict) -> dict:
    base = dict(base)
    _replace_switched_nodes(base, layer)
    for phase in PHASES:
        if isinstance(base.get(phase), dict) and isinstance(layer.get(phase), dict):
            base[phase] = dict(base[phase])
            _replace_switched_nodes(base[phase], layer[phase])
    return _deep_merge(base, layer)


def _later_targets(layers: list[dict]) -> dict[str, str]:
    """node -> the `_target_` the first of `layers` to set one gives it."""
    targets = {}
    for layer in layers:
        for name in NODES:
            target = _concrete_target(layer.get(name))
            if target is not None:
                targets.setdefault(name, target)
    return targets


def _apply_layer(merged: dict, layer: dict, where: str, later: dict | None = None) -> dict:
    """`layer` checked and merged over `merged`. `later`: node -> the target a later layer
    switches it to; a node switched to another target keeps only its runner keys, so its other
    keys are not checked against (nor its module imported for) a target never built."""
    _check_layer(layer, merged, where, later or {})
    return _merge_layer(merged, layer)


def _lift_phase(merged: dict, phase: str) -> dict:
    """The root with `phase`'s subtree merged over it; all phase subtrees removed."""
    root = {key: value for key, value in merged.items() if key not in PHASES}
    subtree = merged.get(phase) if phase in PHASES else None
    if phase in SAMPLING_PHASES and subtree:
        subtree = _respacing_as_num_steps(phase, subtree)
    return _merge_layer(root, subtree or {})


SAMPLING_PHASES = ("inference", "sample")
_STEPS = re.compile(r"(?:ddim)?([0-9]+)")


def _respacing_as_num_steps(phase: str, subtree: dict) -> dict:
    """SpeeD's and DiT's configs choose the sampling steps as `<phase>: {diffusion:
    {timestep_respacing: '250'}}`; here the samplers respace themselves to `num_steps`, so such a
    value is read as num_steps (with a note), and a form that names no step count is refused."""
    diffusion = subtree.get("diffusion")
    if not isinstance(diffusion, dict) or not diffusion.get("timestep_respacing"):
        return subtree
    value = str(diffusion["timestep_respacing"])
    key = f"{phase}.diffusion.timestep_respacing"
    match = _STEPS.fullmatch(value)
    if match is None or "num_steps" in subtree:
        reason = "also sets num_steps" if match else "names no single step count"
        raise ConfigError(
            f"{key}={value!r} {reason}; sampling steps are `{phase}.num_steps` (the sampler "
            "respaces itself), e.g. num_steps=250 sampler=ddpm"
        )
    warnings.warn(f"{key}={value!r} is read as num_steps={match.group(1)}", stacklevel=4)
    rest = {k: v for k, v in diffusion.items() if k != "timestep_respacing"}
    subtree = {k: v for k, v in subtree.items() if k != "diffusion"}
    return {**subtree, **({"diffusion": rest} if rest else {}), "num_steps": int(match.group(1))}


def _finalize(merged: dict) -> DictConfig:
    """Check required values, resolve interpolations, validate the result, make it read-only."""
    untargeted = {
        name: {"_target_": "???", **node}
        for name, node in merged.items()
        if name in NODES and isinstance(node, dict) and "_target_" not in node
    }
    merged = {**merged, **untargeted}
    missing = sorted(_missing_paths(merged))
    if missing:
        also = f"; also unset: {', '.join(missing[1:])}" if len(missing) > 1 else ""
        raise ConfigError(
            f"config key '{missing[0]}' is required but not set; set it in the config or on the "
            f"command line ({missing[0]}=...){also}"
        )
    env_refs = dict(_env_references(merged))
    try:
        cfg = OmegaConf.create(merged)
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        message = str(err).splitlines()[0]
        raise ConfigError(f"cannot resolve config key '{err.full_key}': {message}") from None
    _check_layer(resolved, {}, where=None)
    check_ranges(resolved)
    _ENV_SOURCED.clear()
    for key, variable in env_refs.items():
        _ENV_SOURCED[key] = (variable, OmegaConf.select(cfg, key))
    OmegaConf.resolve(cfg)
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def check_ranges(resolved: dict) -> None:
    """Every number of a resolved config within its range (`speed.config_schema.out_of_range`:
    the `RANGES` of known keys, 64 bits for any integer), else a ConfigError naming the key."""
    for path, value in _numbers(resolved):
        allowed = out_of_range(path, value)
        if allowed is not None:
            raise ConfigError(f"config key '{path}' {allowed}, got {value!r}")


def _numbers(tree: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted path, value) of the numbers in a plain dict/list tree; a list's items share the
    list's path (`ema_rates`), so a range given for a list applies to each item."""
    items = tree.items() if isinstance(tree, dict) else ((None, v) for v in tree)
    for key, value in items:
        path = prefix if key is None else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict | list):
            yield from _numbers(value, path)
        else:
            yield path, value


# Keys of the last loaded config whose value came from `${oc.env:VAR,...}`: key -> (VAR, value).
_ENV_SOURCED: dict[str, tuple[str, Any]] = {}
_ENV_REFERENCE = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)")


def _env_references(tree: Any, prefix: str = "") -> Iterable[tuple[str, str]]:
    """(dotted key, variable) of each value that reads an environment variable."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        if isinstance(value, str) and (match := _ENV_REFERENCE.search(value)):
            yield f"{prefix}{key}", match.group(1)
        elif isinstance(value, dict | list):
            yield from _env_references(value, f"{prefix}{key}.")


def env_hint(message: str) -> str:
    """`message` plus, when it is about a key whose value came from an environment variable
    (e.g. `data.path: no image folder at data/imagenet/train`), which variable sets it."""
    for key, (variable, value) in _ENV_SOURCED.items():
        if message.startswith(key) and str(value) in message:
            state = (
                f"is set to {os.environ[variable]}"
                if variable in os.environ
                else "is not set, so its default was used"
            )
            return (
                f"{message} ({key} comes from the environment variable {variable}, which {state};"
                f" export {variable}=/path/to/it, or give {key}=... on the command line)"
            )
    return message


def _missing_paths(tree: Any, prefix: str = "") -> Iterable[str]:
    """Dotted paths of the ??? placeholders in a plain dict/list tree."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        if value == "???":
            yield f"{prefix}{key}"
        elif isinstance(value, dict | list):
            yield from _missing_paths(value, f"{prefix}{key}.")


# ---- validation ----


def _check_layer(layer: dict, merged: dict, where: str | None, later: dict | None = None) -> None:
    """Check a layer's keys and values against the schema; `merged` (the config so far) supplies
    the `_target_` of nodes the layer does not set; a node that `later` switches to another
    target has only its runner keys checked."""
    for key, value in layer.items():
        if key not in PHASES:
            target = _concrete_target(value) or _concrete_target(merged.get(key))
            if key in (later or {}) and isinstance(value, dict) and later[key] != target:
                _check_node(key, key, value, [], where, switched=True)
            else:
                _check_entry("", key, value, [merged], where)
            continue
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(
                f"config key '{key}' must be a mapping of {key}-phase overrides, "
                f"got {_show(value)}{_at(where)}"
            )
        scope = merged.get(key) if isinstance(merged.get(key), dict) else {}
        for sub_key, sub_value in value.items():
            _check_entry(f"{key}.", sub_key, sub_value, [scope, merged], where)


def _check_entry(prefix: str, key: str, value: Any, scopes: list[dict], where: str | None) -> None:
    path = f"{prefix}{key}"
    if key in ROOT_TYPES:
        _check_value(path, value, ROOT_TYPES[key], where)
    elif key in NODES:
        _check_node(path, key, value, scopes, where)
    else:
        valid = [*ROOT_TYPES, *NODES, *(PHASES if not prefix else ())]
        _unknown_key(prefix, key, valid, where)


def _check_node(
    path: str, name: str, node: Any, scopes: list[dict], where: str | None, switched=False
) -> None:
    """`switched`: a later layer gives the node another target, so only its runner keys count."""
    if not isinstance(node, dict):
        raise ConfigError(
            f"config key '{path}' must be a mapping with a _target_, got {_show(node)}{_at(where)}"
        )
    target = None if switched else _concrete_target(node)
    for scope in scopes:
        target = target or _concrete_target(scope.get(name))
    params, takes_any = _target_params(target, f"{path}._target_", where) if target else ({}, True)
    known = {**params, **NODES[name], **HYDRA_KEYS}
    for key, value in node.items():
        if key in known:
            _check_value(f"{path}.{key}", value, known[key], where)
        elif not takes_any:
            _unknown_key(f"{path}.", key, [*params, *NODES[name]], where)


def _check_value(path: str, value: Any, annotation: Any, where: str | None) -> None:
    if isinstance(value, str) and _is_deferred(value):
        return
    expected = type_mismatch(value, annotation)
    if expected is not None:
        raise ConfigError(f"config key '{path}' expects {expected}, got {_show(value)}{_at(where)}")


def _unknown_key(prefix: str, key: str, valid: list[str], where: str | None) -> None:
    closest = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.0)
    hint = f"; did you mean '{prefix}{closest[0]}'?" if closest else ""
    raise ConfigError(f"unknown config key '{prefix}{key}'{_at(where)}{hint}")


@functools.cache
def _signature(target: str) -> tuple[dict[str, Any], bool]:
    """({keyword parameter: annotation}, whether it takes **kwargs) of a callable's path.

    A callable whose **kwargs accept a known set of names declares them with an attribute
    `extra_config_keys` (a function returning the names); those keys are then checked too.
    """
    obj = _locate(target)
    try:
        signature = inspect.signature(obj, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        signature = inspect.signature(obj)
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = {p.name: p.annotation for p in signature.parameters.values() if p.kind in keyword}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    if takes_any and hasattr(obj, "extra_config_keys"):
        params.update({name: Any for name in obj.extra_config_keys()})
        takes_any = False
    return params, takes_any


def _target_params(target: str, path: str, where: str | None) -> tuple[dict[str, Any], bool]:
    _import_target(target, path, where)
    try:
        return _signature(target)
    except ValueError:  # no introspectable signature (some builtins): accept any key
        return {}, True


def _import_target(target: str, path: str, where: str | None) -> None:
    try:
        obj = _locate(target)
    except (ImportError, AttributeError, ValueError) as err:
        message = f"{type(err).__name__}: {_one_line(err)}"
        raise ConfigError(f"{path}: cannot import '{target}' ({message}){_at(where)}") from None
    if not callable(obj):
        raise ConfigError(f"{path}: '{target}' is not callable{_at(where)}")


def _locate(dotted: str) -> Any:
    """The object at a dotted path such as 'torch.optim.AdamW', importing modules as needed."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        if inspect.ismodule(obj) and not hasattr(obj, part):
            name = ".".join(parts[:i])
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as err:
                if err.name != name:
                    raise
                raise ImportError(f"no module or attribute named '{name}'") from None
        obj = getattr(obj, part)
    return obj


# ---- message helpers ----


def _is_deferred(value: str) -> bool:
    """An interpolation or a ??? placeholder: its value is known only after resolution."""
    return "${" in value or value == "???"


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _at(where: str | None) -> str:
    return f" ({where})" if where else ""


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
