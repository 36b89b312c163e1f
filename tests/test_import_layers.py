"""The layers point down: the metrics library knows no runs or configs, the math package does no
command lines or plots. Checked on import statements, so a lazy import inside a function counts."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("argparse", "matplotlib", "speed.config", "speed.runners")  # the math packages' bans


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` statement of the file names (any depth)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for module in sorted(imported_modules(path)):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(REPO)} imports {module}")
    return found


@pytest.mark.parametrize(
    "folder, forbidden",
    [
        (
            "evaluations",
            ("speed.runners", "speed.config", "speed.sweep", "speed.experiments", "speed.study"),
        ),
        (
            "speed/diffusion",
            LIBRARY + ("speed.study", "speed.flow"),
        ),
        ("speed/models", ("matplotlib", "speed.config", "speed.runners", "speed.study")),
        (
            "speed/utils",
            ("speed.config", "speed.runners", "speed.sweep", "speed.experiments", "speed.study"),
        ),
        (
            "speed/deploy",
            ("speed.config", "speed.runners", "speed.sweep", "speed.app", "speed.study"),
        ),
        # the study sits above the runners, beside the sweeps and the FID curves: none of them
        # (nor anything under them) imports it
        ("speed/runners", ("speed.study", "speed.sweep", "speed.experiments")),
        ("speed/sweep", ("speed.study",)),
        ("speed/experiments", ("speed.study",)),
        ("speed/data", ("speed.study", "speed.runners")),
        ("speed/control", LIBRARY + ("speed.study", "speed.generation", "speed.run")),
        ("speed/autoencoders", ("speed.study", "speed.runners")),
        ("speed/flow", LIBRARY + ("speed.generation", "speed.study")),
        ("speed/adapters", LIBRARY + ("speed.run", "speed.generation", "speed.study")),
        ("speed/control", LIBRARY + ("speed.run", "speed.generation", "speed.study")),
    ],
)
def test_lower_layers_do_not_import_upper_ones(folder, forbidden):
    assert violations(folder, forbidden) == []


def test_nothing_imports_the_app():
    """`speed.app` sits on top (like main.py): the project's other code never imports it."""
    found = []
    for folder in ("speed", "evaluations", "benchmarks"):
        found += [v for v in violations(folder, ("speed.app",)) if not v.startswith("speed/app/")]
    assert found == []


def test_only_the_page_imports_the_service():
    """`speed.serve` sits above the runners beside the page; of the project's code only the page
    (its client) imports it."""
    found = []
    for folder in ("speed", "evaluations", "benchmarks"):
        found += [
            v
            for v in violations(folder, ("speed.serve",))
            if not v.startswith(("speed/serve/", "speed/app/"))
        ]
    assert found == []


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("def f():\n    from speed.config import load_config\n")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    assert violations("pkg", ("speed.config",)) == ["pkg/m.py imports speed.config"]


def test_the_top_level_modules_serve_every_room_and_import_no_room_above():
    """speed/*.py (config, run, generation, errors ...) sit under every room that uses them."""
    above = ("speed.runners", "speed.sweep", "speed.experiments", "speed.study", "speed.app")
    found = [
        f"{path.name} imports {module}"
        for path in sorted((REPO / "speed").glob("*.py"))
        for module in imported_modules(path)
        if any(module == a or module.startswith(a + ".") for a in above)
    ]
    assert found == []
