"""YAML with bounded work: a recursive alias, an alias bomb and deep nesting are one-line
errors (checked in a subprocess with a timeout, so a hang fails the test instead of stalling
it), and every config file reads exactly as OmegaConf reads it."""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from speed.errors import ConfigError
from speed.utils.bounded_yaml import MAX_VALUES, load_yaml

REPO = Path(__file__).resolve().parents[2]

SELF_ALIAS = "seed: &a [*a]\n"
MAP_CYCLE = "model: &m\n  inner: *m\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)  # nine levels of ten: 10**9 values from 600 bytes
DEEP = "a: " + "[" * 5000 + "]" * 5000 + "\n"


def run_main(*words: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *words],
        capture_output=True,
        text=True,
        timeout=120,  # far above a refusal's time; a hang ends here as a failure
        cwd=REPO,
    )


@pytest.mark.parametrize(
    "text,message",
    [
        (SELF_ALIAS, "holds an alias of itself (a recursive alias)"),
        (MAP_CYCLE, "holds an alias of itself (a recursive alias)"),
        (BOMB, f"its YAML aliases expand to more than {MAX_VALUES} values"),
        (DEEP, "its values are nested too deeply"),
    ],
)
def test_hostile_yaml_is_one_line(tmp_path, text, message):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    result = run_main("-c", str(path), "-p", "config")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr == f"error: cannot parse {path}: {result.stderr.split(': ', 2)[2]}"
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_a_recursive_alias_on_the_command_line_is_one_line():
    result = run_main("-c", "configs/image/animals/base.yaml", "-p", "config", "seed=&a [*a]")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: cannot parse override 'seed=&a [*a]'")


def test_shared_values_below_the_bound_still_load():
    text = "base: &b {lr: 0.1, betas: [0.9, 0.99]}\ncopies: [*b, *b, *b]\n"
    assert load_yaml(text, "t")["copies"] == [{"lr": 0.1, "betas": [0.9, 0.99]}] * 3

    def wide(uses: int) -> str:  # `a`: 1,001 values, used `uses` times
        return "a: &a [" + ", ".join(["1"] * 1000) + "]\nb: [" + ", ".join(["*a"] * uses) + "]\n"

    assert len(load_yaml(wide(90), "t")["b"]) == 90  # about 92,000 values: within the bound
    with pytest.raises(ConfigError, match="more than 100000 values"):
        load_yaml(wide(100), "t")  # about 102,000


def test_every_config_reads_as_omegaconf_reads_it():
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(files) > 10
    for path in files:
        expected = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        assert (load_yaml(path.read_text(), str(path)) or {}) == expected, path
