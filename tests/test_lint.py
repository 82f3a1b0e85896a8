"""Static checks: no unused or undefined names in the package and the tests (ruff's pyflakes
rules, configured in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_no_unused_or_undefined_names():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff not installed (pip install -e '.[test]')")
    res = subprocess.run([ruff, "check", "brainseg3d", "tests"], cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
