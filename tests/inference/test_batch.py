"""`brainseg3d segment` on batches: bad inputs reported by name, good cases still written,
resume, atomic writes (a killed batch leaves no partial mask)."""

import json
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from brainseg3d.cli import main

from ..conftest import copy_sample


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    copy_sample(root, "Good_001")
    (copy_sample(root, "Missing_001") / "Missing_001_t2.nii.gz").unlink()
    trunc = copy_sample(root, "Truncated_001") / "Truncated_001_flair.nii.gz"
    trunc.write_bytes(trunc.read_bytes()[: trunc.stat().st_size // 2])
    grid = copy_sample(root, "Grid_001") / "Grid_001_t1.nii.gz"
    img = nib.load(str(grid))
    nib.save(img.slicer[2:, :, :], str(grid))
    nan = copy_sample(root, "Nan_001") / "Nan_001_t1ce.nii.gz"
    img = nib.load(str(nan))
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[10:20, 10:20, 10:20] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), str(nan))
    return root


def test_bad_inputs_named_and_batch_goes_on(bad_batch, tmp_path, capsys):
    out = tmp_path / "out"
    # --register never: grids that differ are an error (auto would register them, tested elsewhere)
    rc = main(["segment", str(bad_batch), str(out), "--precision", "fp32", "--quiet", "--register", "never", "--views", "axial"])
    cap = capsys.readouterr()
    assert rc == 1
    assert cap.out.strip().splitlines() == [str(out / "Good_001.nii.gz")]
    err = cap.err
    assert "1 segmented, 0 skipped" in err and "4 failed" in err
    assert "FAILED Missing_001: missing modality t2" in err
    assert "FAILED Truncated_001: cannot read or preprocess" in err
    assert "FAILED Grid_001: modalities on different grids" in err
    assert "FAILED Nan_001: image holds NaN" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["Good_001.json", "Good_001.nii.gz", "summaries", "summary.json"]
    summary = __import__("json").loads((out / "summary.json").read_text())
    assert summary["ok"] == 1 and summary["failed"] == 4
    assert nib.load(str(out / "Good_001.nii.gz")).get_data_dtype() == np.uint8


def test_resume_skips_existing_and_overwrite(tmp_path, capsys):
    src = tmp_path / "in"
    copy_sample(src, "Case_A")
    out = tmp_path / "out"
    assert main(["segment", str(src), str(out), "--quiet", "--preview", "--colour-table", "--uncertainty", "--views", "axial"]) == 0
    mtime = (out / "Case_A.nii.gz").stat().st_mtime_ns
    # the uncertainty map: uint8 percent on the mask's exact grid, high where the mask's edge is
    mask, unc = nib.load(str(out / "Case_A.nii.gz")), nib.load(str(out / "Case_A_uncertainty.nii.gz"))
    assert unc.shape == mask.shape and np.allclose(unc.affine, mask.affine) and unc.get_data_dtype() == np.uint8
    u, m = np.asarray(unc.dataobj), np.asarray(mask.dataobj)
    assert u.max() <= 100 and u.max() > 50 and u[m == 0].mean() < 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"][0]["review"] in (True, False) and isinstance(summary["review"], list)
    assert (out / "Case_A.png").stat().st_size > 1000
    assert (out / "brats_colours_brats.ctbl").read_text().count("\n") == 5
    capsys.readouterr()
    assert main(["segment", str(src), str(out), "--quiet", "--views", "axial"]) == 0
    assert "0 segmented, 1 skipped (output exists; --overwrite to redo), 0 failed" in capsys.readouterr().err
    runs = sorted((out / "summaries").glob("summary-*.json"))
    assert len(runs) == 2  # each run keeps its own summary; summary.json is the latest
    assert json.loads(runs[-1].read_text())["skipped"] == 1 and json.loads(runs[0].read_text())["ok"] == 1
    assert (out / "Case_A.nii.gz").stat().st_mtime_ns == mtime
    assert main(["segment", str(src), str(out), "--quiet", "--overwrite", "--views", "axial"]) == 0
    assert (out / "Case_A.nii.gz").stat().st_mtime_ns != mtime


@pytest.mark.slow
def test_killed_batch_leaves_no_partial_mask(tmp_path):
    src = tmp_path / "in"
    for i in range(4):
        copy_sample(src, f"Kill_{i:03d}")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "brainseg3d", "segment", str(src), str(out), "--quiet", "--views", "axial"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("Kill_*.nii.gz")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list(out.glob("Kill_*.nii.gz"))
    assert 1 <= len(done) < 4
    for f in done:  # every visible mask is complete
        assert nib.load(str(f)).get_fdata().shape == nib.load(str(next((src / f.name[:-7]).glob("*_t1.nii.gz")))).shape
    # resume finishes the rest and cleans up temp files of the killed run
    assert main(["segment", str(src), str(out), "--quiet", "--views", "axial"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"Kill_{i:03d}.nii.gz" for i in range(4)]
    assert not list(out.glob(".*"))


@pytest.mark.slow
def test_parallel_loaders_same_masks_and_failures_named(bad_batch, tmp_path):
    """Several loader threads (the GPU setting) write the same masks as one, and a bad case
    among them is still reported by name while the others are written."""
    from brainseg3d.inference.batch import segment_cases
    from brainseg3d.core.cases import discover
    from brainseg3d.inference.predictor import Predictor

    copy_sample(bad_batch.parent / "extra", "Good_002")
    cases = discover(bad_batch) + discover(bad_batch.parent / "extra")
    one = segment_cases(cases, tmp_path / "w1", Predictor(device="cpu", precision="fp32", register="never", views="axial"), progress=False, workers=1)
    # the GPU split: z-score on the device tensor instead of in the loader thread
    gpu_like = Predictor(device="cpu", precision="fp32", register="never", views="axial")
    gpu_like.normalize_on_device = True
    # 4 loaders -> 2 writer threads: previews drawn at once must not share matplotlib state
    three = segment_cases(cases, tmp_path / "w3", gpu_like, progress=False, workers=4, preview=True)
    assert [(r.case_id, r.status) for r in one] == [(r.case_id, r.status) for r in three]
    assert sorted(r.case_id for r in three if r.status == "ok") == ["Good_001", "Good_002"]
    assert {r.case_id: r.error.split(":")[0].split(" (")[0] for r in three if r.status == "failed"} == {
        "Missing_001": "missing modality t2", "Truncated_001": "cannot read or preprocess", "Grid_001": "modalities on different grids",
        "Nan_001": "image holds NaN or infinite values"}
    for name in ("Good_001", "Good_002"):
        a = np.asarray(nib.load(str(tmp_path / "w1" / f"{name}.nii.gz")).dataobj)
        b = np.asarray(nib.load(str(tmp_path / "w3" / f"{name}.nii.gz")).dataobj)
        assert (a > 0).sum() > 1000 and np.array_equal(a, b)
        assert (tmp_path / "w3" / f"{name}.png").stat().st_size > 10_000
