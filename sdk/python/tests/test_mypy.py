"""The package passes `mypy --strict` (configured in pyproject.toml: strict, Python 3.9)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import SDK_DIR


def test_mypy_strict() -> None:
    pytest.importorskip("mypy", reason="mypy is in requirements-dev.txt")
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "src/boxyard"],
        cwd=SDK_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout
