"""The README says what is true: every command line and Python example in it runs as written, in order, on
the demo's real layout, and every console example prints exactly what the README shows."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

README = os.path.join(ROOT, "README.md")
SETUP = "python3 -m venv .venv"


def blocks() -> list[tuple[str, str]]:
    """The README's fenced code blocks, (language, text), in order."""
    with open(README) as f:
        return re.findall(r"^```(\w*)\n(.*?)^```", f.read(), flags=re.S | re.M)


def steps() -> list[tuple[str, object, str | None]]:
    """What to run, in order: ("shell", argv, expected output or None), ("python", code, None) and
    ("file", (name, text), None) for the config file a command reads."""
    out: list[tuple[str, object, str | None]] = []
    for language, text in blocks():
        if language == "bash":
            for line in text.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith(SETUP):  # the set-up line: its last command runs here, in a fresh folder
                    line = line.split("&&")[-1].strip()
                    if "pytest" in line:
                        continue
                if line:
                    out.append(("shell", shlex.split(line), None))
        elif language == "console":
            for command, *output in (part.split("\n") for part in ("\n" + text).split("\n$ ")[1:]):
                out.append(("shell", shlex.split(command), "\n".join(output).rstrip("\n")))
        elif language == "python":
            out.append(("python", text, None))
        elif language == "toml":
            out.append(("file", ("build.toml", text), None))
    return out


def run(argv: list[str], cwd: str) -> subprocess.CompletedProcess:
    if argv[0] == "jumpnet-stream":
        argv = [sys.executable, "-m", "jumpnet_stream", *argv[1:]]
    elif argv[0] == "python":
        argv = [sys.executable, *(os.path.join(ROOT, a) if a.startswith("tools/") else a for a in argv[1:])]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_readme_lists_its_commands_in_runnable_order():
    kinds = [kind for kind, _, _ in steps()]
    assert kinds.count("shell") >= 15 and "python" in kinds and "file" in kinds
    first = steps()[0]
    assert first[1] == ["jumpnet-stream", "demo", "demo-out"]


def test_every_readme_example_runs_as_written(tmp_path):
    cwd = str(tmp_path)
    for kind, what, _ in steps():
        if kind == "file":  # the config file the README shows: there before any command runs
            name, text = what
            (tmp_path / name).write_text(text)
    for kind, what, expected in steps():
        if kind == "file":
            continue
        if kind == "python":
            result = subprocess.run([sys.executable, "-c", what], cwd=cwd, capture_output=True, text=True,
                                    timeout=600)
            assert result.returncode == 0, f"README example failed:\n{what}\n{result.stderr}"
            continue
        result = run(what, cwd)
        assert result.returncode == 0, f"`{shlex.join(what)}` failed:\n{result.stderr}"
        if expected is not None:
            got = "\n".join(line.rstrip() for line in result.stdout.rstrip("\n").splitlines())
            assert got == expected, f"`{shlex.join(what)}` printed:\n{got}\nthe README shows:\n{expected}"


@pytest.mark.parametrize("line", sorted(set(re.findall(r"`(python benchmarks/[^`]+)`", open(README).read()))))
def test_benchmark_command_lines_parse(line):
    """Benchmarks take minutes to hours: their README command lines are checked against their options."""
    argv = shlex.split(line)
    script = os.path.join(ROOT, argv[1])
    assert os.path.isfile(script), line
    usage = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0, usage.stderr
    for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
        assert flag in usage.stdout, f"{line}: {flag} is not an option of {argv[1]}"
