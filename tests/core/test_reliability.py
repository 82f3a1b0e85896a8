"""Reliability corpus (issue #12): bad inputs and faults generated at test time, each with the
behaviour it must have: a clear message naming the case, the modality and the problem (or a
warning where the case can still be segmented honestly), the exit status, and the files left.

No silent wrong answers, no tracebacks, no lost cases. Small synthetic volumes
(``conftest.write_case``) keep every model run to about a second.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainseg3d.cli import main
from brainseg3d.core.cases import MODALITIES, CaseError, discover, inspect_case
from brainseg3d.core.checks import check_image, check_network_size
from brainseg3d.io import atomic_path, clean_stale, make_workdir, mask_is_complete

from ..conftest import REPO, write_case

BUNDLE = REPO / "bundles" / "brats_mri_2p5d_segmentation"
SHAPE = (40, 40, 32)  # the smallest comfortable size for the shipped network (in-plane >= 16 after cropping)
SUFFIX = {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair"}


# ----------------------------------------------------------------------------- corpus builders


def good(root: Path, case_id: str, **kw) -> Path:
    return write_case(root / case_id, case_id, shape=kw.pop("shape", SHAPE), **kw)


def modality_file(folder: Path, modality: str) -> Path:
    return folder / f"{folder.name}{SUFFIX[modality]}.nii.gz"


def rewrite(path: Path, fn=None, affine=None, dtype=None):
    """Rewrite a NIfTI with new data (``fn(data)``) and/or a new affine."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    data = fn(data.astype(dtype or data.dtype)) if fn else data
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), str(path))


def singular(path: Path):
    """A header whose sform is singular (one zero column) and without qform."""
    img = nib.load(str(path))
    hdr = img.header.copy()
    aff = np.eye(4)
    aff[2, 2] = 0.0
    hdr.set_sform(aff, code=1)
    hdr["qform_code"] = 0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), None, hdr), str(path))


def truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def stack(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(nib.load(str(modality_file(folder, m))).dataobj) for m in MODALITIES], -1)


#: kind -> (builder(root) -> None, expected message on the FAILED line)
BAD = {
    "nan_t1ce": (lambda r: rewrite(modality_file(good(r, "Nan_t1ce"), "t1ce"), lambda d: _set(d, np.nan), dtype=np.float32),
                 "FAILED Nan_t1ce: image holds NaN or infinite values (t1ce: 1000 NaN voxels)"),
    "inf_flair": (lambda r: rewrite(modality_file(good(r, "Inf_flair"), "flair"), lambda d: _set(d, np.inf, 8), dtype=np.float32),
                  "FAILED Inf_flair: image holds NaN or infinite values (flair: 8 infinite voxels)"),
    "zero_flair": (lambda r: rewrite(modality_file(good(r, "Zero_flair"), "flair"), np.zeros_like),
                   "FAILED Zero_flair: flair is empty (every voxel is 0)"),
    "constant_t2": (lambda r: rewrite(modality_file(good(r, "Const_t2"), "t2"), lambda d: np.full_like(d, 7)),
                    "FAILED Const_t2: t2 is constant (every voxel is 7)"),
    "binary_t1": (lambda r: rewrite(modality_file(good(r, "Binary_t1"), "t1"), lambda d: (d > 0).astype(np.uint8)),
                  "FAILED Binary_t1: t1 holds only the values 0 and 1: it looks like a binary mask"),
    "labelmap_t1ce": (lambda r: rewrite(modality_file(good(r, "Labels_t1ce"), "t1ce"),
                                        lambda d: np.select([d > 125, d > 118, d > 0], [4, 2, 1], 0).astype(np.uint8)),
                      "FAILED Labels_t1ce: t1ce holds only the values 0, 1, 2, 4: it looks like a label map"),
    "all_zero": (lambda r: [rewrite(modality_file(good(r, "All_zero") if m == "t1" else r / "All_zero", m), np.zeros_like) for m in MODALITIES],
                 "FAILED All_zero: all 4 modalities are empty (every voxel is 0)"),
    "mirrored_t2": (lambda r: rewrite(modality_file(good(r, "Mirror_t2"), "t2"), affine=np.diag([-1.0, 1, 1, 1]) @ _shift(SHAPE[0] - 1)),
                    "FAILED Mirror_t2: t2's header is mirrored relative to t1"),
    "singular_t1": (lambda r: singular(modality_file(good(r, "Singular_t1"), "t1")),
                    "FAILED Singular_t1: t1 has a singular affine"),
    "tiny_8": (lambda r: _tiny(r, "Tiny_8", (8, 8, 8)), "FAILED Tiny_8: volume too small for the network"),
    "thin_in_plane": (lambda r: good(r, "Thin_12", shape=(12, 40, 32)), "FAILED Thin_12: volume too small for the network"),
    "truncated_flair": (lambda r: truncate(modality_file(good(r, "Trunc_flair"), "flair")), "FAILED Trunc_flair: cannot read or preprocess"),
    "missing_t2": (lambda r: good(r, "Missing_t2", skip=("_t2",)), "FAILED Missing_t2: missing modality t2"),
    "three_channels": (lambda r: _three(r), "FAILED Three_ch: Three_ch.nii.gz: not a 4-channel volume"),
}


def _set(d, value, n=1000):
    d[np.unravel_index(np.arange(d.size // 2, d.size // 2 + n), d.shape)] = value  # nibabel arrays may be Fortran-ordered
    return d


def _shift(x):
    a = np.eye(4)
    a[0, 3] = -x  # the mirrored x axis covers the same world range
    return a


def _tiny(root: Path, case_id: str, shape):
    folder = root / case_id
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, m in enumerate(MODALITIES):
        nib.save(nib.Nifti1Image((100 + 20 * i + rng.normal(0, 5, shape)).astype(np.int16), np.eye(4)), str(modality_file(folder, m)))


def _three(root: Path):
    (root / "Three_ch").mkdir()
    data = np.random.default_rng(2).normal(100, 5, (*SHAPE, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / "Three_ch" / "Three_ch.nii.gz"))


def _good_kinds(root: Path) -> dict[str, str]:
    """Cases that must be segmented; value: a warning expected in their report ('' for none)."""
    good(root, "Good_001")
    # 5D (X, Y, Z, 1, 4) single file: the singleton dimension is squeezed
    src = good(root / "_src", "Five_src", label=False)
    (root / "Five_d").mkdir()
    nib.save(nib.Nifti1Image(stack(src)[:, :, :, None, :], np.eye(4)), str(root / "Five_d" / "Five_d.nii.gz"))
    shutil.rmtree(root / "_src")
    # a stray brain mask beside four good modalities
    f = good(root, "Stray_mask")
    nib.save(nib.Nifti1Image((stack(f)[..., 0] > 0).astype(np.uint8), np.eye(4)), str(f / "Stray_mask_brainmask.nii.gz"))
    # a corrupt label, and one on another grid: not needed to segment, never registered
    (good(root, "Bad_label") / "Bad_label_seg.nii.gz").write_bytes(b"not a nifti")
    f = good(root, "Offgrid_label")
    lab = f / "Offgrid_label_seg.nii.gz"
    nib.save(nib.load(str(lab)).slicer[2:, :, :], str(lab))
    # one modality covering only half of the field of view: segmented, with a warning
    rewrite(modality_file(good(root, "Cut_fov"), "t2"), lambda d: _cut(d))
    return {"Good_001": "", "Five_d": "", "Stray_mask": "ignored Stray_mask_brainmask.nii.gz",
            "Bad_label": "label file Bad_label_seg.nii.gz is unreadable", "Offgrid_label": "is not on the modalities' grid",
            "Cut_fov": "t2 covers only"}


def _cut(d):
    d = d.copy()
    d[:, :, d.shape[2] // 3 :] = 0
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One input folder holding every bad kind and every good-but-odd kind, plus a duplicate id
    and a symlink loop; segmented once by ``brainseg3d segment``."""
    root = tmp_path_factory.mktemp("corpus")
    inputs = root / "in"
    inputs.mkdir()
    for build, _ in BAD.values():
        build(inputs)
    goods = _good_kinds(inputs)
    # the same id in a second folder: a warning, the first is kept, the batch goes on
    write_case(inputs / "zz_copy" / "Good_001", "Good_001", shape=SHAPE, seed=5)
    # a symlink loop inside the tree
    (inputs / "Good_001" / "loop").symlink_to(inputs, target_is_directory=True)
    return inputs, goods


@pytest.fixture(scope="module")
def corpus_run(corpus, tmp_path_factory):
    inputs, goods = corpus
    out = tmp_path_factory.mktemp("corpus_out") / "out"
    cap = _run_cli(["segment", str(inputs), str(out), "--quiet", "--precision", "fp32", "--members", "1"])
    return inputs, goods, out, cap


def _run_cli(argv) -> dict:
    """``main(argv)`` in this process, capturing stdout / stderr (pytest's capsys is per test)."""
    import io as _io

    out, err = _io.StringIO(), _io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        import logging

        handler = logging.StreamHandler(err)
        logging.getLogger().addHandler(handler)
        try:
            rc = main(argv)
        finally:
            logging.getLogger().removeHandler(handler)
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}


@pytest.fixture(scope="module")
def predictor():
    from brainseg3d.inference.predictor import Predictor

    return Predictor(precision="fp32", members=1)


# ----------------------------------------------------------------------------- 1. input checks


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_is_a_named_error(corpus_run, kind):
    _, _, out, cap = corpus_run
    assert BAD[kind][1] in cap["err"], cap["err"][-4000:]
    case_id = BAD[kind][1].split()[1].rstrip(":")
    assert not (out / f"{case_id}.nii.gz").exists() and not (out / f"{case_id}.json").exists()
    assert "Traceback" not in cap["err"]


@pytest.mark.parametrize("case_id", ["Good_001", "Five_d", "Stray_mask", "Bad_label", "Offgrid_label", "Cut_fov"])
def test_odd_but_usable_input_is_segmented_with_its_warning(corpus_run, case_id):
    inputs, goods, out, cap = corpus_run
    mask = out / f"{case_id}.nii.gz"
    assert str(mask) in cap["out"].splitlines()
    img = nib.load(str(mask))
    assert img.shape == SHAPE and img.get_data_dtype() == np.uint8
    report = json.loads((out / f"{case_id}.json").read_text())
    assert "registration" not in report  # a label problem never triggers registration
    if goods[case_id]:
        assert any(goods[case_id] in w for w in report.get("warnings", [])), report.get("warnings")


def test_batch_summary_exit_status_and_files_left(corpus_run):
    inputs, goods, out, cap = corpus_run
    assert cap["rc"] == 1  # some cases failed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == len(goods) and summary["failed"] == len(BAD)
    # the duplicate id is a warning (the first kept), the symlink loop adds nothing
    assert any("Good_001: two cases share this id" in w for w in summary["warnings"])
    assert "WARNING Good_001: two cases share this id" in cap["err"]
    assert len(summary["cases"]) == len(goods) + len(BAD)
    names = {p.name for p in out.iterdir()}
    assert names == {"summary.json", "summaries"} | {f"{c}.nii.gz" for c in goods} | {f"{c}.json" for c in goods}  # no temporaries
    assert f"{len(goods)} segmented, 0 skipped" in cap["err"]


def test_discovery_survives_loops_duplicates_and_strays(corpus):
    inputs, goods = corpus
    warnings: list[str] = []
    cases = {c.case_id: c for c in discover(inputs, warnings)}
    assert len(cases) == len(BAD) + len(goods)
    assert cases["Good_001"].location() == str(inputs / "Good_001")  # the first found is kept
    assert any("two cases share this id" in w and "zz_copy" in w for w in warnings)
    assert "Stray_mask_brainmask" not in cases and any("ignored Stray_mask_brainmask" in w for w in cases["Stray_mask"].warnings)
    info = inspect_case(cases["Bad_label"])
    assert info.ok and not info.label_ok and "unreadable" in info.warnings[0]
    info = inspect_case(cases["Offgrid_label"])
    assert info.ok and info.same_grid and not info.label_ok


def test_api_arrays_are_checked(predictor):
    """segment_image with arrays and Nifti images: the same checks as the file path."""
    rng = np.random.default_rng(0)
    arr = np.zeros((4, *SHAPE), np.float32)
    arr[:, 4:-4, 4:-4, 4:-4] = rng.normal(100, 10, (4, SHAPE[0] - 8, SHAPE[1] - 8, SHAPE[2] - 8))
    assert predictor.segment_image(arr, case_id="ok").label.shape == SHAPE
    nan = arr.copy()
    nan[:] = np.nan
    with pytest.raises(CaseError, match=r"^arr_nan: image holds NaN or infinite values \(t1: "):
        predictor.segment_image(nan, case_id="arr_nan")
    inf = arr.copy()
    inf[2, 10, 10, 10] = np.inf
    with pytest.raises(CaseError, match=r"t2: 1 infinite voxels"):
        predictor.segment_image(inf, case_id="arr_inf")
    with pytest.raises(CaseError, match=r"^arr_zero: all 4 modalities are empty"):
        predictor.segment_image(np.zeros_like(arr), case_id="arr_zero")
    with pytest.raises(CaseError, match=r"volume too small for the network"):
        predictor.segment_image(arr[:, :8, :8, :8], case_id="arr_tiny")
    imgs = [nib.Nifti1Image(a, np.eye(4)) for a in arr]
    imgs[3] = nib.Nifti1Image(arr[3], np.diag([-1.0, 1, 1, 1]))
    with pytest.raises(CaseError, match=r"flair's header is mirrored relative to t1"):
        predictor.segment_image(imgs, case_id="nii_mirror")
    five = nib.Nifti1Image(np.moveaxis(arr, 0, -1)[:, :, :, None, :], np.eye(4))
    assert predictor.segment_image(five).label.shape == SHAPE
    cut = arr.copy()
    cut[0, :, :, 12:] = 0
    report = predictor.segment_image(cut, case_id="cut").report
    assert any(w.startswith("t1 covers only") for w in report["warnings"])


def test_public_segment_checks_arrays():
    import brainseg3d

    with pytest.raises(CaseError, match="image holds NaN"):
        brainseg3d.segment(np.full((4, *SHAPE), np.nan, np.float32), members=1)


def test_check_functions_directly():
    x = np.random.default_rng(0).normal(100, 5, (4, 20, 20, 20)).astype(np.float32)
    assert check_image(x, "c") == []
    x[1] = 0
    with pytest.raises(CaseError, match="^c: t1ce is empty"):
        check_image(x, "c")
    with pytest.raises(CaseError, match="needs at least 16 in-plane"):
        check_network_size((15, 40, 40), "c")
    check_network_size((16, 16, 1), "c")


def test_truncated_model_weights_named(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    shutil.copytree(BUNDLE / "scripts", bundle / "scripts")
    (bundle / "models").mkdir()
    data = (BUNDLE / "models" / "model.pt").read_bytes()
    (bundle / "models" / "model.pt").write_bytes(data[: len(data) // 3])
    src = tmp_path / "in"
    good(src, "Case_A")
    cap = _run_cli(["segment", str(src), str(tmp_path / "out"), "--quiet", "--bundle", str(bundle)])
    assert cap["rc"] == 2
    assert f"error: cannot read the model weights {bundle / 'models' / 'model.pt'}" in cap["err"]
    assert "truncated or corrupt" in cap["err"] and "Traceback" not in cap["err"]


# ----------------------------------------------------------------------------- 2. output checks


def test_output_under_a_regular_file(tmp_path):
    (tmp_path / "file").write_text("x")
    src = tmp_path / "in"
    good(src, "Case_A")
    cap = _run_cli(["segment", str(src), str(tmp_path / "file" / "out"), "--quiet"])
    assert cap["rc"] == 2 and "Traceback" not in cap["err"]
    assert f"error: cannot create the output folder {tmp_path / 'file' / 'out'}: {tmp_path / 'file'} is a file" in cap["err"]
    assert cap["out"] == ""


@contextlib.contextmanager
def small_fs(path: Path, size: str = "1m", readonly: bool = False):
    """A tmpfs mounted at ``path`` (root only); skips the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True, encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({proc.stderr.strip() or 'mount failed'}): needs root in a container that allows mounts")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_output_folder(tmp_path):
    src = tmp_path / "in"
    good(src, "Case_A")
    with small_fs(tmp_path / "ro", readonly=True) as ro:
        cap = _run_cli(["segment", str(src), str(ro / "out"), "--quiet"])
    assert cap["rc"] == 2 and "Traceback" not in cap["err"]
    assert f"error: cannot write to the output folder {ro / 'out'}: Read-only file system" in cap["err"]


def test_output_folder_without_permission(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop root (the read-only and regular-file tests cover the path)")
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    src = tmp_path / "in"
    good(src, "Case_A")
    try:
        cap = _run_cli(["segment", str(src), str(out), "--quiet"])
    finally:
        out.chmod(0o755)
    assert cap["rc"] == 2 and "Permission denied" in cap["err"] and "Traceback" not in cap["err"]


def test_disk_full_while_writing_a_case(tmp_path):
    src = tmp_path / "in"
    good(src, "Case_A")
    with small_fs(tmp_path / "full", size="1m") as fs:
        out = fs / "out"
        out.mkdir()
        filler = fs / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill the file system (whole pages), then free one page
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
        assert filler.stat().st_size % 4096 == 0
        os.truncate(filler, filler.stat().st_size - 4096)
        cap = _run_cli(["segment", str(src), str(out), "--quiet", "--members", "1"])
        names = sorted(p.name for p in out.iterdir())
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    assert cap["rc"] == 1 and "Traceback" not in cap["err"]
    assert "FAILED Case_A: cannot write the outputs (No space left on device" in cap["err"]
    assert "Case_A.json" not in names and "Case_A.nii.gz" not in names  # no report without its mask
    assert not [n for n in names if n.startswith(".")]
    assert summary is not None and summary["failed"] == 1  # the summary fits once the case's files are gone


def test_summary_unwritable_still_lists_masks(tmp_path):
    src = tmp_path / "in"
    good(src, "Case_A")
    out = tmp_path / "out"
    (out / "summary.json").mkdir(parents=True)  # the summary cannot be written there
    cap = _run_cli(["segment", str(src), str(out), "--quiet", "--members", "1"])
    assert cap["out"].splitlines() == [str(out / "Case_A.nii.gz")]
    assert cap["rc"] == 1 and "error: the summary was not written" in cap["err"] and "Traceback" not in cap["err"]


def test_outputs_follow_the_umask(tmp_path):
    src = tmp_path / "in"
    good(src, "Case_A")
    old = os.umask(0o027)
    try:
        cap = _run_cli(["segment", str(src), str(tmp_path / "out"), "--quiet", "--members", "1"])
    finally:
        os.umask(old)
    assert cap["rc"] == 0
    for name in ("Case_A.nii.gz", "Case_A.json", "summary.json"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o640, name
    with atomic_path(tmp_path / "x.txt") as tmp:
        Path(tmp).write_text("x")
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~old


# ----------------------------------------------------------------------------- 3. shared folders, resume


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_start_up_keeps_a_live_runs_temporaries(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    host = "".join(ch if ch.isalnum() else "_" for ch in socket.gethostname())[:40]
    live = subprocess.Popen(["sleep", "60"])
    try:
        live_tmp = out / f".Other_case.{host}-{live.pid}.abcd1234.part.nii.gz"
        live_dir = out / f".brainseg3d-Other_case.{host}-{live.pid}.abcd1234"
        dead_tmp = out / f".Old_case.{host}-{_dead_pid()}.efgh5678.part.nii.gz"
        dead_dir = out / f".brainseg3d-dicom.{host}-{_dead_pid()}.efgh5678"
        for f in (live_tmp, dead_tmp):
            f.write_bytes(b"partial")
        for d in (live_dir, dead_dir):
            d.mkdir()
            (d / "Other_case_t1.nii.gz").write_bytes(b"x")
        src = tmp_path / "in"
        good(src, "Case_A")
        cap = _run_cli(["segment", str(src), str(out), "--quiet", "--members", "1"])
        assert cap["rc"] == 0
        assert live_tmp.exists() and live_dir.exists()  # another live run's files are never touched
        assert not dead_tmp.exists() and not dead_dir.exists()  # a killed run's are cleaned up
        assert (out / "Case_A.nii.gz").exists()
    finally:
        live.kill()
        live.wait()
    assert clean_stale(out) and not live_tmp.exists()  # once it is gone, they go too


def test_temporary_names_carry_the_pid(tmp_path):
    with atomic_path(tmp_path / "Case_A.nii.gz") as tmp:
        assert f"-{os.getpid()}." in tmp.name and tmp.name.startswith(".Case_A.")
        tmp.write_bytes(b"x")
    d = make_workdir(tmp_path, "Case_A")
    assert f"-{os.getpid()}." in d.name and clean_stale(tmp_path) == []  # this process is alive
    d.rmdir()


@pytest.mark.slow
def test_two_concurrent_runs_on_one_folder(tmp_path):
    """The README's shard pattern: two processes write one folder at once; neither loses a case."""
    src = tmp_path / "in"
    for i in range(4):
        good(src, f"Shard_{i}", seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "brainseg3d", "segment", str(src), str(out), "--quiet", "--members", "1"]
    procs = [subprocess.Popen(cmd + ["--shard", f"{k}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", cwd=REPO)
             for k in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"Shard_{i}.nii.gz" for i in range(4)]
    assert not list(out.glob(".*"))
    assert main(["merge", str(out)]) == 0


def test_resume_redoes_incomplete_masks(tmp_path):
    src = tmp_path / "in"
    for c in ("Empty_mask", "Trunc_mask", "Done_mask"):
        good(src, c)
    out = tmp_path / "out"
    assert _run_cli(["segment", str(src), str(out), "--quiet", "--members", "1"])["rc"] == 0
    (out / "Empty_mask.nii.gz").write_bytes(b"")
    truncate(out / "Trunc_mask.nii.gz")
    assert not mask_is_complete(out / "Empty_mask.nii.gz")[0] and not mask_is_complete(out / "Trunc_mask.nii.gz")[0]
    done = (out / "Done_mask.nii.gz").stat().st_mtime_ns
    cap = _run_cli(["segment", str(src), str(out), "--quiet", "--members", "1"])
    assert cap["rc"] == 0 and "2 segmented, 1 skipped" in cap["err"]
    assert "Empty_mask: the existing mask Empty_mask.nii.gz is incomplete (empty file)" in cap["err"]
    assert (out / "Done_mask.nii.gz").stat().st_mtime_ns == done
    for c in ("Empty_mask", "Trunc_mask"):
        assert mask_is_complete(out / f"{c}.nii.gz")[0]


# ----------------------------------------------------------------------------- 5. evaluate


def test_evaluate_scores_what_it_can_and_lists_the_rest(tmp_path):
    gt_root, pred = tmp_path / "gt", tmp_path / "pred"
    pred.mkdir()
    cases = ["A_good", "B_unreadable", "C_empty_gt", "D_squeeze", "E_nan", "F_no_label", "H_missing"]
    for c in cases:
        write_case(gt_root / c, c, shape=(20, 20, 16), label=c != "F_no_label")
    lab = {c: np.asarray(nib.load(str(gt_root / c / f"{c}_seg.nii.gz")).dataobj) for c in cases if c != "F_no_label"}
    nib.save(nib.Nifti1Image(lab["A_good"], np.eye(4)), str(pred / "A_good.nii.gz"))
    (pred / "B_unreadable.nii.gz").write_bytes(gzip.compress(b"garbage" * 100))
    (gt_root / "C_empty_gt" / "C_empty_gt_seg.nii.gz").write_bytes(b"")
    nib.save(nib.Nifti1Image(lab["A_good"], np.eye(4)), str(pred / "C_empty_gt.nii.gz"))
    nib.save(nib.Nifti1Image(lab["D_squeeze"][..., None], np.eye(4)), str(pred / "D_squeeze.nii.gz"))
    nan = lab["E_nan"].astype(np.float32)
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(pred / "E_nan.nii.gz"))
    nib.save(nib.Nifti1Image(lab["A_good"], np.eye(4)), str(pred / "F_no_label.nii.gz"))
    nib.save(nib.Nifti1Image(lab["A_good"], np.eye(4)), str(pred / "G_no_gt.nii.gz"))
    csv_path = tmp_path / "scores.csv"
    cap = _run_cli(["evaluate", str(pred), str(gt_root), "--out", str(csv_path)])
    assert cap["rc"] == 1 and "Traceback" not in cap["err"]
    scored = [ln.split("\t")[0] for ln in cap["out"].splitlines()[1:] if not ln.startswith("MEAN")]
    assert scored == ["A_good", "D_squeeze"]
    expected = {
        "B_unreadable": "the prediction is unreadable",
        "C_empty_gt": "the ground truth is an empty file",
        "E_nan": "the prediction holds NaN or infinite values",
        "F_no_label": "no ground-truth label",
        "G_no_gt": "no ground truth for this prediction",
        "H_missing": "prediction missing",
    }
    for c, msg in expected.items():
        assert f"ERROR {c}: {msg}" in cap["err"], cap["err"]
    doc = json.loads(csv_path.with_suffix(".json").read_text())
    assert doc["n_cases"] == 2 and {e["case"] for e in doc["errors"]} == set(expected)
    rows = csv_path.read_text().splitlines()
    assert len(rows) == 1 + 2 + len(expected)
    assert doc["mean"]["Dice_WT"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- 7. temporary data


def test_registration_work_stays_in_the_output_folder(tmp_path, monkeypatch):
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    src = tmp_path / "in"
    f = good(src, "Grid_001")
    t2 = modality_file(f, "t2")
    nib.save(nib.load(str(t2)).slicer[2:, :, :], str(t2))  # on another grid: registered
    out = tmp_path / "out"
    cap = _run_cli(["segment", str(src), str(out), "--quiet", "--members", "1", "--skull-strip", "never"])
    assert cap["rc"] == 0, cap["err"]
    assert "registration" in json.loads((out / "Grid_001.json").read_text())
    assert list(systmp.iterdir()) == []  # nothing in the system temp folder
    assert not list(out.glob(".*"))  # the work folder inside the output folder is gone


def test_failed_dicom_conversion_leaves_no_folder(tmp_path):
    import SimpleITK as sitk

    from brainseg3d.data.dicom import dicom_case_to_nifti

    from ..data.test_dicom import DESCRIPTIONS, write_series

    vol = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 500, (6, 16, 16)).astype(np.int16))
    uids = {m: write_series(vol, tmp_path / "P1", DESCRIPTIONS[m]) for m in MODALITIES}
    # one more flair slice of another size in the same series: flair fails after t1..t2 were written
    last = sorted((tmp_path / "P1").glob("*.dcm"))[-1]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(last))
    reader.ReadImageInformation()
    odd = sitk.GetImageFromArray(np.ones((1, 8, 8), np.int16))[:, :, 0]
    for key in ("0008|0016", "0008|0060", "0010|0020", "0020|000d", "0020|000e", "0008|103e", "0020|0037", "0028|0030", "0018|0050"):
        odd.SetMetaData(key, reader.GetMetaData(key))
    odd.SetMetaData("0008|0018", uids["flair"] + ".99")
    odd.SetMetaData("0020|0013", "7")
    odd.SetMetaData("0020|0032", "0\\0\\6")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(tmp_path / "P1" / "odd.dcm"))
    writer.Execute(odd)
    with pytest.raises(CaseError, match="^P1: cannot read the flair DICOM series"):
        dicom_case_to_nifti(tmp_path / "P1", tmp_path / "work" / "P1")
    assert not (tmp_path / "work" / "P1").exists()


# ----------------------------------------------------------------------------- 6. bundle


@pytest.mark.slow
def test_bundle_run_skips_bad_cases_and_writes_the_others(tmp_path):
    inputs = tmp_path / "in"
    good(inputs, "A_good")
    truncate(modality_file(good(inputs, "B_trunc"), "flair"))
    rewrite(modality_file(good(inputs, "C_nan"), "t1"), lambda d: _set(d, np.nan), dtype=np.float32)
    good(inputs, "D_good", seed=3)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
           "--bundle_root", str(BUNDLE), "--dataset_dir", str(inputs), "--output_dir", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["A_good.nii.gz", "D_good.nii.gz"]
    assert "skipping B_trunc: cannot read or preprocess" in log
    assert "skipping C_nan: image holds NaN or infinite values (t1: 1000 NaN voxels)" in log
    assert nib.load(str(out / "D_good.nii.gz")).shape == SHAPE
