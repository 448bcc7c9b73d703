"""The code style the project holds to, checked by the suite so that CI enforces it: ``ruff check`` (the rules in
pyproject.toml) and ``ruff format --check``. ruff is pinned to one minor series in the ``test`` extra, because its
formatter's style and its rules move between minor releases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["study", "benchmarks", "tests"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    fix = "ruff check --fix" if command == ["check"] else "ruff format"
    assert done.returncode == 0, f"ruff {' '.join(command)} failed; `{fix} {' '.join(PATHS)}` fixes most of it:\n" + (
        done.stdout + done.stderr
    )
