"""YAML text to plain Python values with bounded work: config files and command-line values.

YAML aliases (`*name`) reuse an anchored value (`&name`). Two misuses make a loader that
follows them do unbounded work: an alias inside the value it names (`a: &x [*x]`), a cycle
that recursive code (OmegaConf's) follows until the interpreter's stack overflows, and an "alias
bomb" (the billion laughs: each level a list of ten aliases of the level below), a few hundred
bytes whose expansion holds billions of values. Here the document's node graph is composed
first (PyYAML's composer shares an aliased node, so composing is cheap), then measured: a
cycle, or an expansion past `MAX_VALUES` values, is refused before anything is built. Nesting
deeper than the interpreter's recursion limit is refused too. Each refusal is one
`ConfigError` line naming the source.

The loader is OmegaConf's own (its float forms and duplicate-key check), so a document reads
exactly as `OmegaConf.load` reads it.
"""

from __future__ import annotations

from typing import Any

import yaml
from omegaconf._utils import get_yaml_loader

from speed.errors import ConfigError

MAX_VALUES = 100_000  # values a document may expand to, an alias counted at each use

_Loader = get_yaml_loader()


def load_yaml(text: str, source: str) -> Any:
    """The value of YAML `text` (None for an empty document); `source` names it in errors.

    Raises ConfigError (one line) for a syntax error, a recursive alias, an expansion past
    `MAX_VALUES` values or nesting too deep to read.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse {source}: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise ConfigError(f"cannot parse {source}: its values are nested too deeply") from None
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a node graph with a cycle or expanding to more than MAX_VALUES values.

    An iterative depth-first walk: `sizes` holds the expanded size of each finished node (so a
    node aliased many times is measured once), `open_nodes` the nodes on the current path (a
    child among them closes a cycle).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[id(node)] > MAX_VALUES:
                raise ConfigError(
                    f"cannot parse {source}: its YAML aliases expand to more than {MAX_VALUES} "
                    f"values (at line {node.start_mark.line + 1}); write the values out, or "
                    "alias less"
                )
            continue
        if id(node) in sizes:
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise ConfigError(
                    f"cannot parse {source}: the value anchored at line "
                    f"{child.start_mark.line + 1} holds an alias of itself (a recursive alias); "
                    "write it out"
                )
            stack.append((child, False))
