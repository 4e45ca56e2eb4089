"""The examples run, as a user would run them, with BOXYARD_URL and BOXYARD_KEY set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import SDK_DIR, Org

EXAMPLES = SDK_DIR / "examples"


@pytest.mark.parametrize(
    "name,expect",
    [
        ("hello.py", ["stdout: Hello from", "stderr: this goes to stderr", "exit code: 7"]),
        ("stream.py", ["[out] tick 1 ✓", "[out] tick 3 ✓", "[stdout @0] echo: alpha", "echo: gamma", "exit code 0"]),
        ("files.py", ["sum computed in the box: 5050", "read back: 5050", "downloaded work/result.txt"]),
        ("async_hello.py", ["job 0", "job 1", "job 2"]),
    ],
)
def test_example_runs(org: Org, name: str, expect: list) -> None:
    env = dict(os.environ, BOXYARD_URL=org.url, BOXYARD_KEY=org.key, PYTHONIOENCODING="utf-8")
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], env=env, capture_output=True, text=True, timeout=180, cwd=SDK_DIR
    )
    assert r.returncode == 0, f"{name} failed:\n{r.stdout}\n{r.stderr}"
    for line in expect:
        assert line in r.stdout, f"{line!r} not in the output of {name}:\n{r.stdout}"


def readme_example() -> str:
    """The first Python block of sdk/python/README.md (the five-line example)."""
    text = (SDK_DIR / "README.md").read_text(encoding="utf-8")
    start = text.index("```python\n") + len("```python\n")
    return text[start : text.index("```", start)]


def test_the_readme_example_runs(org: Org) -> None:
    # scripts/test-python-sdk.sh points BOXYARD_USER_PYTHON at a fresh virtualenv with `pip install ./sdk/python`.
    python = os.environ.get("BOXYARD_USER_PYTHON", sys.executable)
    env = dict(os.environ, BOXYARD_URL=org.url, BOXYARD_KEY=org.key, PYTHONIOENCODING="utf-8")
    r = subprocess.run([python, "-c", readme_example()], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"the README example failed:\n{r.stdout}\n{r.stderr}"
    assert r.stdout.startswith("hello\n") and "Linux" in r.stdout, r.stdout
