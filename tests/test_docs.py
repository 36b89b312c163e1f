"""Every command shown in README.md and docs/*.md goes through the parser it would meet, so the
documentation cannot drift from the code:

- `python main.py -c FILE -p PHASE overrides` (also under torchrun, with `-m` sweeps): the config
  file loads for that phase with those overrides, every key and value checked as a run checks
  them (a sweep expands and checks every run); a line shown as `$ python main.py ...` followed by
  `error: ...` must fail with that message;
- `python -m MODULE args` and `python path/to/script.py args`: the module or script exists and
  its argparse parser accepts the arguments (the program stops right after parsing);
- `torchrun ...`: torchrun's own parser accepts its options, then the script or module as above;
- `make TARGET VAR=value`: the Makefile has the target and the variable.

Commands are the lines of fenced (```) and indented code blocks that start with one of those
words (after an optional `$ ` prompt); `\\` continues a line, `# ...` ends it, and a block's
`NAME=value` lines set `$NAME` for the lines after them. A word in capitals (`CONFIG`, `RUN_DIR`)
or in angle brackets is a placeholder: a config path written so is not loaded, an argument so
written is parsed as any other. Python snippets (```python blocks, or code blocks that start with
`import`/`from`) must compile, import names that exist and use no undefined name. Relative links
must point to files that exist.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"^(<[^>]+>|[A-Z][A-Z0-9_]*)$")
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int
    text: str
    expected_error: str | None = None  # the `error: ...` line shown after a `$ ` command

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def code_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line number, info string, lines) of each fenced or indented code block."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            info, body, start = line[3:].strip(), [], i + 2
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append((start, info, body))
        elif line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            body, start = [], i + 1
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            blocks.append((start, "", body))
            continue
        i += 1
    return blocks


def _is_command(line: str) -> bool:
    words = line.split()
    if not words:
        return False
    if words[0] in ("torchrun", "make"):
        return True
    return words[0] == "python" and len(words) > 1 and (words[1] == "-m" or ".py" in words[1])


def commands(page: Path) -> list[Snippet]:
    """The command lines of a page's code blocks, continuations joined, variables substituted."""
    found = []
    for start, info, body in code_blocks(page.read_text()):
        if info not in ("", "bash", "sh", "shell", "console"):
            continue
        variables: dict[str, str] = {}
        joined: list[tuple[int, str]] = []
        for offset, line in enumerate(body):
            if joined and joined[-1][1].endswith("\\"):
                joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
            else:
                joined.append((start + offset, line.strip()))
        for k, (number, line) in enumerate(joined):
            prompt = line.startswith("$ ")
            line = line[2:] if prompt else line
            match = ASSIGNMENT.match(line)
            if match and " " not in match.group(2).strip("'\""):
                variables[match.group(1)] = match.group(2).strip("'\"")
                continue
            if not _is_command(line):
                continue
            for name, value in variables.items():
                line = line.replace(f'"${name}"', f"'{value}'").replace(f"${name}", value)
            after = joined[k + 1][1] if k + 1 < len(joined) else ""
            error = after[len("error: ") :] if prompt and after.startswith("error: ") else None
            found.append(Snippet(page.name, number, line, error))
    return found


def python_snippets(page: Path) -> list[Snippet]:
    found = []
    for start, info, body in code_blocks(page.read_text()):
        text = "\n".join(body).strip("\n")
        first = text.split("\n", 1)[0]
        if info == "python" or (info == "" and re.match(r"(from \S+ import |import )\S", first)):
            found.append(Snippet(page.name, start, text))
    return found


ALL_COMMANDS = [c for page in PAGES for c in commands(page)]
ALL_PYTHON = [s for page in PAGES for s in python_snippets(page)]


# ---- checking one command ----


class _Parsed(Exception):
    """Raised in place of returning from parse_args: the program stops after parsing."""


def _words(snippet: Snippet) -> list[str]:
    text = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", "0", snippet.text)  # $NODE_RANK ...
    text = re.sub(r"\[[^\]]*\.\.\.\]", "", text)  # an elided optional group: [key=value ...]
    words = shlex.split(text, comments=True)
    return words[:-1] if words and words[-1] == "&" else words  # run in the background


def _main_module():
    spec = importlib.util.spec_from_file_location("speed_main_docs", REPO / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_main(argv: list[str]) -> None:
    """What main.py does up to running the phase: parse, load and check (every run of a sweep)."""
    from speed.config import check_values, load_config
    from speed.sweep.launch import plan_sweep

    phase = argv.index("-p") + 1 if "-p" in argv else None
    if phase and PLACEHOLDER.match(argv[phase]):
        argv = [*argv[:phase], "config", *argv[phase + 1 :]]
    args = _parse_quietly(_main_module().parse_args, argv)
    if PLACEHOLDER.match(args.config):
        return
    phase = "train" if args.phase == "config" else args.phase
    if args.multirun:
        plan_sweep(args.config, phase, args.overrides)
    else:
        check_values(load_config(args.config, phase, args.overrides))


def _parse_quietly(parse, argv):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parse(argv)
    except SystemExit as exit_:
        raise AssertionError(f"arguments refused: {stderr.getvalue().strip()}") from exit_


def check_program(target: str, argv: list[str], *, module: bool) -> None:
    """Run the module or script as __main__ until its argparse parser has parsed `argv`."""
    if module:
        assert importlib.util.find_spec(target) is not None, f"no module {target}"
    else:
        assert (REPO / target).is_file(), f"no script {target}"

    def parse_and_stop(parser, args=None, namespace=None):
        namespace, extra = parser.parse_known_args(args, namespace)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        raise _Parsed(namespace)

    saved_argv, saved_parse = sys.argv, argparse.ArgumentParser.parse_args
    sys.argv = [target, *argv]
    argparse.ArgumentParser.parse_args = parse_and_stop
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            if module:
                runpy.run_module(target, run_name="__main__", alter_sys=False)
            else:  # as `python script.py` does, the script's folder comes first on sys.path
                sys.path.insert(0, str((REPO / target).parent))
                runpy.run_path(str(REPO / target), run_name="__main__")
    except _Parsed:
        return
    except SystemExit as exit_:
        raise AssertionError(f"{target} refused {argv}: {stderr.getvalue().strip()}") from exit_
    finally:
        sys.argv, argparse.ArgumentParser.parse_args = saved_argv, saved_parse
        sys.path[:] = [p for p in sys.path if p != str((REPO / target).parent) or module]
    raise AssertionError(f"{target} ran to the end without parsing its arguments with argparse")


def check_python(argv: list[str]) -> None:
    """`python main.py ...`, `python -m module ...` or `python script.py ...` (after python)."""
    if argv[0] == "-m":
        check_program(argv[1], argv[2:], module=True)
    elif argv[0] == "main.py":
        check_main(argv[1:])
    else:
        check_program(argv[0], argv[1:], module=False)


def check_torchrun(argv: list[str]) -> None:
    from torch.distributed.run import get_args_parser

    args = _parse_quietly(get_args_parser().parse_args, argv)
    if args.module:
        check_program(args.training_script, args.training_script_args, module=True)
    elif args.training_script == "main.py":
        check_main(args.training_script_args)
    else:
        check_program(args.training_script, args.training_script_args, module=False)


def check_make(argv: list[str]) -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, flags=re.M))
    variables = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:]?=", makefile, flags=re.M))
    for word in argv:
        if "=" in word:
            name = word.split("=", 1)[0]
            assert name in variables, f"Makefile sets no variable {name}"
        else:
            assert word in targets, f"Makefile has no target {word!r}"


def check_command(snippet: Snippet) -> None:
    words = _words(snippet)
    if words[0] == "make":
        check_make(words[1:])
    elif words[0] == "torchrun":
        check_torchrun(words[1:])
    else:
        check_python(words[1:])


@pytest.mark.parametrize("snippet", ALL_COMMANDS, ids=str)
def test_documented_command_parses(snippet, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if snippet.expected_error is None:
        check_command(snippet)
        return
    from speed.errors import user_message

    with pytest.raises(Exception) as caught:
        check_command(snippet)
    message = user_message(caught.value)
    assert message is not None, f"not a one-line user error: {caught.value!r}"
    shown = snippet.expected_error.split("...")[0].rstrip("{(")
    assert message.startswith(shown), f"documented {shown!r}, got {message!r}"


def test_the_checker_sees_every_kind_of_command():
    """Guards the extraction itself: a regex slip would make every check above vacuous."""
    starts = {" ".join(_words(c)[:2]) for c in ALL_COMMANDS}
    assert {"make demo", "make test", "python main.py", "python -m"} <= starts
    assert any(c.text.startswith("torchrun") for c in ALL_COMMANDS)
    assert any(c.expected_error for c in ALL_COMMANDS)
    assert len(ALL_COMMANDS) > 50


@pytest.mark.parametrize(
    "text, why",
    [
        ("python main.py -c configs/image/animals/nothing.yaml -p train", "config file not found"),
        ("python main.py -c configs/image/animals/base.yaml -p train guidence_scale=2", "unknown"),
        ("python main.py -c configs/image/animals/base.yaml -p trian", "arguments refused"),
        ("python -m speed.experiments.nothing --out x", "no module"),
        ("python -m evaluations.fid a.npz b.npz --no-such-flag", "refused"),
        ("torchrun --no-such-option=2 main.py -c configs/image/animals/base.yaml -p x", "refused"),
        ("make nothing", "no target"),
        ("make ablations NOTHING=1", "no variable"),
    ],
)
def test_the_checker_refuses_a_broken_command(text, why, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(Exception, match=why):
        check_command(Snippet("x.md", 1, text))


def test_code_blocks_of_both_kinds_are_read():
    page = "text\n\n    python main.py -c A \\\n        -p train\n\n```bash\nX=1\nmake demo $X\n```"
    path = Path(__file__).parent / "__page__.md"
    try:
        path.write_text(page)
        found = [(c.line, c.text) for c in commands(path)]
    finally:
        path.unlink()
    assert found == [(3, "python main.py -c A  -p train"), (8, "make demo 1")]


# ---- python snippets and links ----


@pytest.mark.parametrize("snippet", ALL_PYTHON, ids=str)
def test_python_snippet_is_complete(snippet):
    compile(snippet.text, str(snippet), "exec")
    for match in re.finditer(r"^from (\S+) import (.+)$", snippet.text, flags=re.M):
        module = importlib.import_module(match.group(1))
        for name in (n.strip().split(" as ")[0] for n in match.group(2).split(",")):
            assert hasattr(module, name), f"{match.group(1)} has no {name}"
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run(
        [str(ruff), "check", "--no-cache", "--select", "F821", "--stdin-filename", "s.py", "-"],
        input=snippet.text,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"{snippet.page}:{snippet.line}: {result.stdout}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name} links to {target}, which does not exist"
