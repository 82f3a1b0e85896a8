"""A non-editable install works: the wheel carries the shipped bundle and the sample, and the
installed package segments from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_wheel_holds_the_bundle_and_the_sample_and_installed_demo_runs(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels)], capture_output=True, text=True, encoding="utf-8", errors="replace", cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("brainseg3d-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    bundle = "brainseg3d/_data/bundles/brats_mri_2p5d_segmentation"
    for f in ("configs/inference.json", "configs/metadata.json", "configs/quality.json", "models/model.pt", "scripts/components.py"):
        assert f"{bundle}/{f}" in names, f
    assert any(n.startswith("brainseg3d/_data/sample_data/") and n.endswith("_flair.nii.gz") for n in names)
    # install it apart from the source tree (the dependencies come from this environment)
    target = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert inst.returncode == 0, inst.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import brainseg3d, brainseg3d.inference.predictor as i; print(brainseg3d.__file__); print(i.DEFAULT_BUNDLE); "
            "from brainseg3d.cli import main; raise SystemExit(main(['demo', '--out', 'out', '--quiet']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", errors="replace", cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith(str(target)) and lines[1].startswith(str(target))  # not the source tree
    assert "Dice WT" in run.stdout and (tmp_path / "out").is_dir()
