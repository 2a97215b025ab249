"""Every command the README shows works as written: its flags parse, and its --help runs."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from micrograd_gen.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def shell_lines():
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.strip()
                if part:
                    lines.append(part)
    return lines


ENGINE_LINES = [line for line in shell_lines() if line.startswith("python -m micrograd_gen")]


def test_readme_shows_the_two_setup_commands_first():
    lines = shell_lines()
    assert lines[:2] == ["pip install -e .", "python -m micrograd_gen tour"]
    assert "python -m pytest" in lines


def test_every_command_in_the_readme_parses():
    assert ENGINE_LINES, "the README shows no engine command"
    parser = build_parser()
    for line in ENGINE_LINES:
        argv = shlex.split(line)[3:]
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # argparse's way of saying a flag or choice is wrong
            pytest.fail(f"README command does not parse ({e}): {line}")
        assert getattr(args, "run", None), line


@pytest.mark.parametrize("command", sorted({shlex.split(l)[3] for l in ENGINE_LINES} | set(COMMANDS)))
def test_help_runs(command):
    result = subprocess.run([sys.executable, "-m", "micrograd_gen", command, "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--debug" in result.stdout   # the common flags a command uses: tests/test_cli.py


def test_top_level_help_lists_every_command_with_one_line():
    result = subprocess.run([sys.executable, "-m", "micrograd_gen", "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0
    for command in COMMANDS:
        assert re.search(rf"^\s+{re.escape(command)}\s", result.stdout, re.M), command
    assert "unavailable" not in result.stdout


def test_pip_extras_named_in_the_readme_exist():
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in re.findall(r"pip install -e '\.\[([\w-]+)\]'", README):
        assert re.search(rf"^{extra} = ", pyproject, re.M), extra
