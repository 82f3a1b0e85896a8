"""The web demo (``brainseg3d app``): pure helpers, and the app driven in headless Chromium.

The end-to-end test uses it as a person would: it starts the app through
``brainseg3d.app.launch`` on a free localhost port, uploads the four modality files and the
ground truth of a real case in Debian's Chromium (selenium + chromium-driver), waits for the
overlay images, reads the volumes and Dice tables, downloads the mask and compares it voxel for
voxel with the Predictor (fp32, as the app runs). A screenshot is saved under the test's tmp
folder (its path is printed; ``pytest -s`` shows it).

Chromium, chromedriver, streamlit and selenium come from ``.ci/install_browser.sh``; when one
is missing or the browser does not start, the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainseg3d.app import core
from brainseg3d.core.cases import Case
from brainseg3d.io import label_volumes_ml

from .conftest import FORMATS, REPO, SAMPLE, write_case

E2E_CASE = FORMATS / "BraTS2021_00006"


# ============================================================================ upload checks


def _sizes(*names, size=1000):
    return [(n, size) for n in names]


def test_classify_four_files_and_seg():
    plan = core.classify_uploads(_sizes("X_1_t1.nii.gz", "X_1_t1ce.nii.gz", "X_1_t2.nii", "X_1_FLAIR.nii.gz", "X_1_seg.nii.gz"))
    assert plan.ok, plan.errors
    assert plan.case_id == "X_1"
    assert plan.images == {"t1": "X_1_t1.nii.gz", "t1ce": "X_1_t1ce.nii.gz", "t2": "X_1_t2.nii", "flair": "X_1_FLAIR.nii.gz"}
    assert plan.label == "X_1_seg.nii.gz"


def test_classify_brats2023_names_and_4d():
    plan = core.classify_uploads(_sizes("BraTS-GLI-00000-000-t1n.nii.gz", "BraTS-GLI-00000-000-t1c.nii.gz",
                                        "BraTS-GLI-00000-000-t2w.nii.gz", "BraTS-GLI-00000-000-t2f.nii.gz"))
    assert plan.ok and plan.case_id == "BraTS-GLI-00000-000" and plan.label is None
    plan = core.classify_uploads(_sizes("case7.nii.gz", "case7_seg.nii.gz"))
    assert plan.ok and plan.image4d == "case7.nii.gz" and plan.label == "case7_seg.nii.gz"


@pytest.mark.parametrize(
    "names, expected",
    [
        (("a_t1.nii.gz", "a_t1ce.nii.gz", "a_flair.nii.gz"), r"Missing modality T2 \(a file named CASE_t2\.nii\.gz or CASE-t2w"),
        (("a_seg.nii.gz",), r"Missing modality T1 .*, T1c .*, T2 .*, FLAIR \(a file named CASE_flair"),
        (("a_t1.nii.gz", "a_t1ce.nii.gz", "a_t2.nii.gz", "a_flair.nii.gz", "notes.txt"), r"notes\.txt is not an image file"),
        (("scan.png",), r"scan\.png is not an image file"),
        (("a_t1.nii.gz", "b_t1ce.nii.gz", "a_t2.nii.gz", "a_flair.nii.gz"), r"more than one case \(a, b\)"),
        (("a_t1.nii.gz", "a_T1.nii", "a_t1ce.nii.gz", "a_t2.nii.gz", "a_flair.nii.gz"), r"Two files for modality T1"),
        (("a.nii.gz", "a_t1.nii.gz"), r"not both"),
        (("a.nii.gz", "b.nii.gz"), r"2 files without a modality suffix"),
        (("a_t1.nii.gz", "a_t1ce.nii.gz", "a_t2.nii.gz", "a_flair.nii.gz", "b_seg.nii.gz"), r"ground truth b_seg\.nii\.gz names case b"),
    ],
)
def test_classify_wrong_uploads_have_clear_messages(names, expected):
    plan = core.classify_uploads(_sizes(*names))
    assert not plan.ok
    assert any(re.search(expected, e) for e in plan.errors), plan.errors


def test_classify_same_file_twice_counts_once():
    names = ("a_t1.nii.gz", "a_t1ce.nii.gz", "a_t2.nii.gz", "a_flair.nii.gz")
    assert core.classify_uploads(_sizes(*names, "a_t1.nii.gz")).ok
    plan = core.classify_uploads(_sizes(*names) + [("a_t1.nii.gz", 5)])
    assert plan.errors == ["Two files for modality T1: a_t1.nii.gz twice, with different contents; upload one case at a time."]


def test_classify_size_cap_and_empty_file():
    names = ("a_t1.nii.gz", "a_t1ce.nii.gz", "a_t2.nii.gz", "a_flair.nii.gz")
    plan = core.classify_uploads([(n, 60_000_000) for n in names], max_total_mb=200)
    assert any("Upload too large: 240 MB in all, over the 200 MB limit" in e for e in plan.errors)
    plan = core.classify_uploads([(n, 0 if n.endswith("t2.nii.gz") else 10) for n in names])
    assert any("a_t2.nii.gz is empty" in e for e in plan.errors)
    assert core.classify_uploads([]).errors


def test_write_uploads_stays_in_the_session_folder(tmp_path):
    src = write_case(tmp_path / "src", "Up_1")
    files = {f"../../evil/{p.name}": p.read_bytes() for p in sorted(src.iterdir())}  # a hostile name
    plan = core.classify_uploads([(n, len(b)) for n, b in files.items()])
    assert plan.ok, plan.errors
    folder = tmp_path / "session" / "uploads"
    case = core.write_uploads(files, plan, folder)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file() and "src" not in p.parts)
    assert written == sorted(Path("session/uploads") / p.name for p in src.iterdir())
    assert core.case_problem(case) is None
    assert case.label is not None and set(case.images) == {"t1", "t1ce", "t2", "flair"}


def test_case_problem_mismatched_grid_and_unreadable(tmp_path):
    src = write_case(tmp_path / "a", "G_1", label=False)
    other = write_case(tmp_path / "b", "G_1", shape=(20, 28, 20), label=False)
    shutil.copy(other / "G_1_t2.nii.gz", src / "G_1_t2.nii.gz")
    case = Case("G_1", images={m: src / f"G_1_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")})
    msg = core.case_problem(case)
    assert msg.startswith("The files are not on one voxel grid") and "t2 (20, 28, 20)" in msg
    (src / "G_1_t2.nii.gz").write_bytes(b"this is not gzip")
    assert "Cannot read G_1_t2.nii.gz" in core.case_problem(case)


def test_find_bundles(tmp_path, monkeypatch):
    def bundle(p):
        (p / "configs").mkdir(parents=True)
        (p / "configs" / "inference.json").write_text("{}")
        (p / "models").mkdir()
        (p / "models" / "model.pt").write_bytes(b"")
        return p

    a = bundle(tmp_path / "bundles" / "a")
    (tmp_path / "bundles" / "not_a_bundle").mkdir()
    b = bundle(tmp_path / "extra" / "b")
    c = bundle(tmp_path / "more" / "c")
    assert core.find_bundles(tmp_path / "bundles") == [a.resolve()]
    extra = os.pathsep.join([str(b), str(tmp_path / "more"), str(a)])
    assert core.find_bundles(tmp_path / "bundles", extra) == [a.resolve(), b.resolve(), c.resolve()]
    assert core.find_bundles(REPO / "bundles")  # the shipped bundle


# ============================================================================ overlay rendering


def test_render_overlay_colours_views_and_opacity():
    bg = np.zeros((10, 12, 8), np.uint8)
    lab = np.zeros_like(bg)
    lab[2, 3, 4] = 1
    lab[5, 6, 4] = 2
    lab[7, 8, 4] = 4
    rgb = core.render_overlay(bg, lab, "axial", 4, opacity=1.0, min_size=0, convention="neurological", letters=False)
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 10, 3)  # rot90: rows = y (anterior up), columns = x
    # axial slice z=4 through rot90: voxel (x, y) -> row (Y-1-y), column x
    assert tuple(rgb[12 - 1 - 3, 2]) == (255, 0, 0)
    assert tuple(rgb[12 - 1 - 6, 5]) == (0, 200, 0)
    assert tuple(rgb[12 - 1 - 8, 7]) == (255, 255, 0)
    assert rgb.sum() == 255 + 200 + 510
    half = core.render_overlay(bg + 100, lab, "axial", 4, opacity=0.5, min_size=0, convention="neurological", letters=False)
    assert tuple(half[12 - 1 - 3, 2]) == (178, 50, 50)  # 0.5 * 100 + 0.5 * 255 rounded
    assert tuple(half[0, 0]) == (100, 100, 100)
    assert core.render_overlay(bg, lab, "coronal", 3, min_size=0).shape == (8, 10, 3)
    assert core.render_overlay(bg, lab, "sagittal", 2, min_size=0).shape == (8, 12, 3)
    none = core.render_overlay(bg + 7, None, "sagittal", 99, min_size=0, letters=False)  # index clipped, no labels
    assert (none == 7).all()


def test_render_overlay_errors_mode_square_pixels_and_upscale():
    bg = np.zeros((6, 6, 6), np.uint8)
    pred = np.zeros_like(bg)
    gt = np.zeros_like(bg)
    pred[1, 1, 2] = 2  # false positive
    gt[4, 4, 2] = 1  # false negative
    pred[3, 3, 2] = gt[3, 3, 2] = 4  # true positive: not coloured
    rgb = core.render_overlay(bg, pred, "axial", 2, opacity=1.0, mode="errors", ground_truth=gt, min_size=0, convention="neurological", letters=False)
    assert tuple(rgb[5 - 1, 1]) == core.FP_COLOUR
    assert tuple(rgb[5 - 4, 4]) == core.FN_COLOUR
    assert tuple(rgb[5 - 3, 3]) == (0, 0, 0)
    with pytest.raises(ValueError):
        core.render_overlay(bg, pred, "axial", 2, mode="errors")
    # 1 x 1 x 3 mm voxels: the coronal view is stretched to square pixels; small slices are enlarged
    thick = core.render_overlay(bg, pred, "coronal", 2, zooms=(1, 1, 3), min_size=0)
    assert thick.shape == (18, 6, 3)
    big = core.render_overlay(bg, pred, "axial", 2, min_size=60)
    assert big.shape == (60, 60, 3)


def test_errors_per_region_in_both_label_schemes():
    # a predicted necrosis where the truth has edema: no whole-tumour error, but a tumour-core false positive
    pred = np.zeros((6, 6, 6), np.uint8)
    gt = np.zeros_like(pred)
    pred[1, 1, 2], gt[1, 1, 2] = 1, 2
    pred[3, 3, 2], gt[3, 3, 2] = 2, 3  # truth ET (2023 scheme, 3) predicted as edema: TC and ET false negatives
    fp, fn = core.error_masks(pred, gt, "WT")
    assert not fp.any() and not fn.any()
    fp, fn = core.error_masks(pred, gt, "TC")
    assert fp[1, 1, 2] and fp.sum() == 1 and fn[3, 3, 2] and fn.sum() == 1
    fp, fn = core.error_masks(pred, gt, "ET")
    assert not fp.any() and fn[3, 3, 2] and fn.sum() == 1
    assert core.error_counts(pred, gt, 0.5, "TC") == {"false_positive_ml": 0.5, "false_negative_ml": 0.5}
    rgb = core.render_overlay(np.zeros_like(pred), pred, "axial", 2, opacity=1.0, mode="errors", ground_truth=gt, min_size=0,
                              convention="neurological", letters=False, region="TC")
    assert tuple(rgb[5 - 1, 1]) == core.FP_COLOUR and tuple(rgb[5 - 3, 3]) == core.FN_COLOUR
    assert "tumour core (TC)" in core.legend_html("errors", region="TC")
    with pytest.raises(ValueError, match="region"):
        core.error_masks(pred, gt, "XX")


def _from_bytes(raw: bytes) -> nib.Nifti1Image:
    import gzip

    return nib.Nifti1Image.from_bytes(gzip.decompress(raw))


def test_niivue_layers_are_world_placed_0_1_volumes(tmp_path):
    affine = np.array([[-1.0, 0, 0, 90], [0, -1, 0, 120], [0, 0, 2, -70], [0, 0, 0, 1]])
    lab = np.zeros((5, 6, 7), np.uint8)
    lab[1, 1, 1], lab[2, 2, 2] = 1, 4
    layers = core.niivue_layers(lab, affine, "labels", opacity=0.3)
    assert [l["name"] for l in layers] == ["label_1.nii.gz", "label_4.nii.gz"]  # empty edema left out
    assert [l["colormap"] for l in layers] == ["red", "redyell"] and {l["opacity"] for l in layers} == {0.3}
    one = _from_bytes(layers[1]["data"])
    assert np.allclose(one.affine, affine) and int(one.header["sform_code"]) == 1 and int(one.header["qform_code"]) == 1
    assert np.array_equal(np.asarray(one.dataobj), (lab == 4).astype(np.uint8))
    gt = np.zeros_like(lab)
    gt[1, 1, 1], gt[3, 3, 3] = 1, 2
    errs = core.niivue_layers(lab, affine, "errors", gt, region="WT")
    assert [l["name"] for l in errs] == ["WT_false_positive.nii.gz", "WT_false_negative.nii.gz"]
    assert np.asarray(_from_bytes(errs[0]["data"]).dataobj)[2, 2, 2] == 1 and np.asarray(_from_bytes(errs[1]["data"]).dataobj)[3, 3, 3] == 1
    unc = np.zeros_like(lab)
    unc[0, 0, 0] = 80
    assert np.asarray(_from_bytes(core.niivue_layers(lab, affine, "uncertainty", uncertainty=unc)[0]["data"]).dataobj).max() == 80
    with pytest.raises(ValueError):
        core.niivue_layers(lab, affine, "errors")
    # the background: the modality file itself, or one channel of a 4D file
    data = np.random.default_rng(0).random((5, 6, 7, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "c4.nii.gz"))
    raw, name = core.niivue_background(Case("c4", image4d=tmp_path / "c4.nii.gz"), "t2")
    assert name == "c4_t2.nii.gz" and np.allclose(np.asarray(_from_bytes(raw).dataobj), data[..., 2])
    nib.save(nib.Nifti1Image(data[..., 3], affine), str(tmp_path / "c_flair.nii.gz"))
    raw, name = core.niivue_background(Case("c", images={"flair": tmp_path / "c_flair.nii.gz"}), "flair")
    assert name == "c_flair.nii.gz" and raw == (tmp_path / "c_flair.nii.gz").read_bytes()


def test_display_volumes_are_ras_for_any_orientation(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 1
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS storage
    lab = nib.Nifti1Image((data > 60).astype(np.uint8), flipped)
    ras = core.display_labels(lab)
    assert np.array_equal(ras, (data > 60).astype(np.uint8)[::-1])
    # a 4D channel-last file gives the four modalities on the same display grid
    four = np.stack([data * (i + 1) for i in range(4)], axis=-1)
    nib.save(nib.Nifti1Image(four, flipped), str(tmp_path / "c4.nii.gz"))
    mods, zooms = core.display_modalities(Case("c4", image4d=tmp_path / "c4.nii.gz"))
    assert list(mods) == ["t1", "t1ce", "t2", "flair"] and zooms == (1.0, 1.0, 1.0)
    assert all(m.shape == (4, 5, 6) and m.dtype == np.uint8 for m in mods.values())
    assert mods["t1"][0, 0, 0] > mods["t1"][-1, 0, 0]  # x flipped to RAS


def test_to_uint8_and_default_slices():
    v = np.zeros((20, 20, 20), np.float32)
    v[5:15, 5:15, 5:15] = np.linspace(0, 1000, 1000).reshape(10, 10, 10) + 1
    u = core.to_uint8(v)
    assert u.dtype == np.uint8 and u[0, 0, 0] == 0 and u.max() == 255
    assert (core.to_uint8(np.zeros((3, 3, 3))) == 0).all()
    lab = np.zeros((20, 30, 40), np.uint8)
    lab[2:5, 10:13, 30:33] = 2
    assert core.default_slices(lab, lab.shape) == {"axial": 31, "coronal": 11, "sagittal": 3}
    assert core.default_slices(None, (20, 30, 40)) == {"axial": 20, "coronal": 15, "sagittal": 10}


def test_legend_tables_and_downloads(tmp_path):
    items = core.legend_items("labels")
    assert [c for _, c in items] == [(255, 0, 0), (0, 200, 0), (255, 255, 0)]
    assert "enhancing tumour" in core.legend_html() and "rgb(255, 0, 0)" in core.legend_html()
    assert "false positive" in core.legend_html("errors") and f"rgb{core.FP_COLOUR}" in core.legend_html("errors")
    report = {"volumes": {"necrotic_core_ml": 1.234, "edema_ml": 2.0, "enhancing_tumour_ml": 0.5, "tumour_core_ml": 1.734, "whole_tumour_ml": 3.734}}
    rows = core.volume_rows(report)
    assert rows[-1] == {"region": "whole tumour (WT = 1 + 2 + ET)", "volume (ml)": "3.73"}
    scores = {"Dice_WT": 0.9, "Dice_TC": 0.8, "Dice_ET": 0.71234, "HD95_WT": 2.0, "HD95_TC": 3.0, "HD95_ET": 4.0}
    assert core.score_rows(scores)[2] == {"region": "enhancing tumour (ET)", "Dice": "0.712", "HD95 (mm)": "4.0"}
    pred = np.zeros((4, 4, 4), np.uint8)
    gt = np.zeros_like(pred)
    pred[0, 0, :2] = 1
    gt[0, 0, 1:] = 2
    assert core.error_counts(pred, gt) == {"false_positive_ml": 0.001, "false_negative_ml": 0.002}
    img = nib.Nifti1Image(pred.astype(np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    raw = core.mask_bytes(img, tmp_path, "m.nii.gz")
    back = nib.load(str(tmp_path / "m.nii.gz"))
    assert raw[:2] == b"\x1f\x8b" and back.get_data_dtype() == np.uint8 and np.array_equal(back.get_fdata(), pred)
    ctbl = core.colour_table_bytes(tmp_path).decode()
    assert "4 enhancing_tumour 255 255 0 255" in ctbl
    assert json.loads(core.report_bytes({"a": 1, "p": Path("x")})) == {"a": 1, "p": "x"}


# ============================================================================ launch


def test_launch_command_is_headless_local_and_capped():
    from brainseg3d.app import launch

    cmd = launch.build_command(8600)
    opts = dict(zip(cmd[5::2], cmd[6::2]))
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]) == launch.APP_SCRIPT and launch.APP_SCRIPT.is_file()
    assert opts["--server.port"] == "8600" and opts["--server.address"] == "127.0.0.1"
    assert opts["--server.headless"] == "true" and opts["--browser.gatherUsageStats"] == "false"
    assert opts["--server.maxUploadSize"] == str(core.MAX_UPLOAD_MB)
    assert 1024 < launch.free_port() < 65536


def test_launch_without_streamlit_says_how_to_install(monkeypatch, capsys):
    from brainseg3d.app import launch

    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: None)
    assert launch.launch(port=0) == 2
    assert "pip install 'brainseg3d[web]'" in capsys.readouterr().err


# ============================================================================ the page, without a browser


def test_messages_never_show_server_paths():
    msg = "unreadable file /tmp/brainseg3d-app-x1/uploads/abc/Case_t1.nii.gz: not a gzip file (truncated)"
    assert core.without_paths(msg, "/tmp/brainseg3d-app-x1") == "unreadable file Case_t1.nii.gz: not a gzip file (truncated)"
    assert core.without_paths("no path here", "/tmp/x") == "no path here"


def test_views_radiological_by_default_with_letters():
    vol = np.zeros((6, 5, 4), np.uint8)  # RAS
    vol[5, 2, 1] = 200  # the patient's right
    assert core.slice_view(vol, "axial", 1)[2, 0] == 200  # radiological: on the image's left
    assert core.slice_view(vol, "axial", 1, "neurological")[2, 5] == 200
    assert core.slice_view(vol, "coronal", 2)[4 - 1 - 1, 0] == 200  # rows: superior first
    assert core.view_letters("axial") == ("R", "L", "A", "P")
    assert core.view_letters("coronal", "neurological") == ("L", "R", "S", "I")
    assert core.view_letters("sagittal") == ("P", "A", "S", "I")
    plain = core.render_overlay(vol, None, "axial", 1, letters=False)
    lettered = core.render_overlay(vol, None, "axial", 1)
    assert plain.shape == lettered.shape
    yellow = (lettered[..., 0] > 200) & (lettered[..., 1] > 180) & (lettered[..., 2] < 80)
    h, w = yellow.shape
    assert yellow[:, : w // 8].any() and yellow[:, -w // 8 :].any() and yellow[: h // 8].any() and yellow[-h // 8 :].any()
    assert not ((plain[..., 0] > 200) & (plain[..., 2] < 80)).any()


def test_render_overlay_uncertainty_and_quality_rows():
    bg = np.zeros((6, 6, 6), np.uint8)
    unc = np.zeros_like(bg)
    unc[2, 2, 2] = 100  # a coin flip: full colour at opacity 1
    unc[3, 3, 2] = 50
    rgb = core.render_overlay(bg, np.zeros_like(bg), "axial", 2, opacity=1.0, mode="uncertainty", uncertainty=unc, min_size=0,
                              convention="neurological", letters=False)
    assert tuple(rgb[5 - 2, 2]) == core.UNCERTAINTY_COLOUR
    assert tuple(rgb[5 - 3, 3]) == tuple(int(c / 2 + 0.5) for c in core.UNCERTAINTY_COLOUR)
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    with pytest.raises(ValueError, match="uncertainty map"):
        core.render_overlay(bg, bg, "axial", 2, mode="uncertainty")
    report = {"quality": {"predicted_dice": {"WT": 0.91, "TC": 0.8, "ET": 0.7}, "review": False, "reasons": [],
                          "member_agreement": {"WT": 0.95, "TC": 0.9, "ET": 0.8}}}
    rows = core.quality_rows(report)
    assert rows[0] == {"region": "whole tumour (WT)", "predicted Dice": "0.91", "members agree (Dice)": "0.95"}
    assert core.quality_rows({}) == []


def test_app_page_with_the_sample_case(tmp_path, monkeypatch):
    """Streamlit's AppTest runs the page in-process: the sample case, one bundle."""
    if importlib.util.find_spec("streamlit") is None:
        pytest.skip("streamlit not installed (pip install 'brainseg3d[web]', or run .ci/install_browser.sh)")
    import tempfile

    from streamlit.testing.v1 import AppTest

    from brainseg3d.app.launch import APP_SCRIPT

    monkeypatch.delenv("BRAINSEG3D_BUNDLES", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=240)
    at.run()
    assert not at.exception
    assert core.DISCLAIMER in at.warning[0].value
    assert "Upload a case to segment it" in at.info[0].value and not at.table
    at.radio(key="source").set_value(next(o for o in at.radio(key="source").options if o.startswith("Sample case"))).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.table) == 4  # files used, volumes, quality estimate, Dice
    assert list(at.table[0].value["modality"]) == ["T1", "T1c", "T2", "FLAIR", "ground truth"]
    assert "predicted Dice" in at.table[2].value.columns
    assert not any("Compare models" in h.value for h in at.subheader)  # one bundle: nothing to compare
    assert any("necrotic tumour core" in m.value for m in at.markdown)  # the legend
    viewers = at.radio(key="viewer")
    assert viewers.value == "niivue" and list(viewers.options)[0].startswith("Interactive (NiiVue")  # installed with [web]
    assert any("In use: **NiiVue**" in c.value for c in at.caption)
    assert [s.label for s in at.slider] == ["Overlay opacity"]  # NiiVue scrolls itself: no slice sliders
    layers = res_layers = next(iter(at.session_state["results"].values()))["niivue"]["layers"][1]
    assert [l["name"] for l in res_layers] == ["label_1.nii.gz", "label_2.nii.gz", "label_4.nii.gz"], layers
    at.radio(key="viewer").set_value("slices").run()
    assert not at.exception, at.exception
    assert sorted(s.label for s in at.slider) == ["Axial slice", "Coronal slice", "Overlay opacity", "Sagittal slice"]
    assert [s.label for s in at.sidebar.slider] == ["Overlay opacity"]  # the controls are in the sidebar
    assert any("In use: plain images" in c.value for c in at.caption)
    at.radio(key="overlay_mode").set_value("Errors vs ground truth").run()
    assert any("whole tumour (WT): false positives" in m.value for m in at.markdown)
    at.radio(key="error_region").set_value("ET").run()
    assert not at.exception and any("enhancing tumour (ET): false positives" in m.value for m in at.markdown)
    at.radio(key="viewer").set_value("niivue").run()  # the error layers of that region, in NiiVue
    assert not at.exception, at.exception
    assert [l["name"] for l in next(iter(at.session_state["results"].values()))["niivue"]["layers"][1]][0].startswith("ET_false_")
    at.radio(key="overlay_mode").set_value("Uncertainty").run()
    assert not at.exception and any("uncertain voxels" in m.value for m in at.markdown)
    res = next(iter(at.session_state["results"].values()))
    assert res["report"]["precision"] == "fp32" and res["mask"][:2] == b"\x1f\x8b"
    session = Path(at.session_state["tmpdir"].name)
    assert session.parent == tmp_path and (session / "outputs").is_dir()


# ============================================================================ end to end, in Chromium

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1500,3000",
    "--enable-unsafe-swiftshader",  # WebGL 2 on the CPU (SwiftShader), for the NiiVue viewer
]  # fmt: skip


def _browser_or_skip():
    """(chromium binary, chromedriver) or pytest.skip with the reason."""
    missing = [m for m in ("streamlit", "selenium") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (run .ci/install_browser.sh)")
    chromium = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser")) if p and os.path.exists(p)), None)
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if not chromium or not driver:
        pytest.skip("Debian chromium / chromium-driver not installed (run .ci/install_browser.sh)")
    return chromium, driver


@contextlib.contextmanager
def _app_server(tmp_path, **env_vars):
    """The app started through brainseg3d.app.launch on a free port; yields its address."""
    log = open(tmp_path / "streamlit.log", "w")
    code = "import sys; from brainseg3d.app.launch import launch; sys.exit(launch(port=0))"
    env = dict(os.environ, TMPDIR=str(tmp_path), **env_vars)  # the session's upload folder goes under tmp_path
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=log, text=True, encoding="utf-8", errors="replace", cwd=REPO,
                            env=env, start_new_session=True)
    try:
        address = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", address), f"launch printed {address!r}"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{address}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail(f"the app did not start: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield address
    finally:
        proc.terminate()  # the launcher forwards SIGTERM to Streamlit and waits for it
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _start_chrome(chromium, chromedriver, tmp_path, download_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chrome-profile'}"]:
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(service=Service(chromedriver, log_output=str(tmp_path / "chromedriver.log")), options=opts)
    except Exception as e:  # noqa: BLE001 - any failure to start the browser is a skip, with its reason
        pytest.skip(f"headless Chromium did not start: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    # a script waits while the page's main thread is busy (NiiVue decoding the volumes on 2 CPU
    # cores took longer than the 30 s default once); the waits below bound the test's time
    driver.set_script_timeout(150)
    return driver


def _page_errors(driver) -> list[str]:
    return [e.text for e in driver.find_elements("css selector", '[data-testid="stAlertContentError"], [data-testid="stException"]')]


def _wait(driver, what, condition, timeout, errors_ok=False):
    """Wait for ``condition``; fail at once when the page shows an error (unless ``errors_ok``)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d):
        if not errors_ok and (errors := _page_errors(d)):
            pytest.fail(f"the page shows an error while waiting for {what}: {errors}")
        return condition(d)

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(check)
    except TimeoutException:
        pytest.fail(f"timed out after {timeout} s waiting for {what}; errors on the page: {_page_errors(driver)}")


def _niivue_drawn(driver):
    """Inside the NiiVue iframe: pixel statistics of its canvas once it shows a brain (many grey
    levels) and the label overlay (red and green voxels), else ``None``."""
    import io

    from PIL import Image

    canvases = driver.find_elements("tag name", "canvas")
    if not canvases or canvases[0].size["width"] < 200:
        return None
    rgb = np.asarray(Image.open(io.BytesIO(canvases[0].screenshot_as_png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    grey = (abs(r - g) < 8) & (abs(g - b) < 8) & (r > 20)
    red = (r > 150) & (g < 110) & (b < 110)
    green = (g > 150) & (r < 140) & (b < 140)
    stats = {"size": rgb.shape[:2], "grey_levels": len(np.unique(r[grey])), "grey_px": int(grey.sum()), "red_px": int(red.sum()),
             "green_px": int(green.sum())}
    return stats if stats["grey_levels"] > 50 and stats["grey_px"] > 5000 and stats["red_px"] > 50 and stats["green_px"] > 50 else None


def _text(driver):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


@pytest.mark.slow
def test_app_end_to_end_in_chromium(tmp_path):
    chromium, chromedriver = _browser_or_skip()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    from brainseg3d.core.cases import discover
    from brainseg3d.inference.predictor import DEFAULT_BUNDLE, Predictor

    case_dir = E2E_CASE if E2E_CASE.is_dir() else SAMPLE
    files = sorted(case_dir.glob("*.nii*"))
    assert len(files) == 5, files
    flair = next(f for f in files if "flair" in f.name.lower())
    case_id = discover(case_dir)[0].case_id
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    # a second bundle (a copy of the shipped one) so that the app offers a model comparison
    extra = tmp_path / "extra_bundles" / "brats_copy"
    shutil.copytree(DEFAULT_BUNDLE, extra, ignore=shutil.ignore_patterns("eval", "__pycache__", "*.ts"))
    infer_cfg = extra / "configs" / "inference.json"  # the copy reads axial slices only: another model, a third of the time
    cfg = json.loads(infer_cfg.read_text())
    assert cfg["views"] == ["axial", "coronal", "sagittal"], cfg["views"]
    infer_cfg.write_text(json.dumps({**cfg, "views": ["axial"]}, indent=4))
    t0 = time.time()
    with _app_server(tmp_path, BRAINSEG3D_BUNDLES=str(extra)) as address:
        driver = _start_chrome(chromium, chromedriver, tmp_path, downloads)
        try:
            driver.get(address)
            upload = _wait(driver, "the file uploader", lambda d: d.find_elements(By.CSS_SELECTOR, 'input[type="file"]'), 60)[0]
            assert "Research use only. Not a medical device." in _text(driver)

            # a person forgets the FLAIR: a clear message, nothing runs
            upload.send_keys("\n".join(str(f) for f in files if f != flair))
            _wait(driver, "the missing-modality message", lambda d: "Missing modality FLAIR" in _text(d), 30, errors_ok=True)
            # ... then adds it (the uploader keeps the earlier files): the case is segmented
            upload = driver.find_element(By.CSS_SELECTOR, 'input[type="file"]')
            driver.execute_script("arguments[0].value = '';", upload)
            upload.send_keys(str(flair))
            _wait(driver, "the message to go", lambda d: "Missing modality" not in _text(d), 60, errors_ok=True)

            # the default viewer is NiiVue: it must really draw the case (pixels in its WebGL canvas)
            frame = _wait(driver, "the NiiVue viewer", lambda d: d.find_elements(By.CSS_SELECTOR, 'iframe[title*="niivue"]'), 150)[0]
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", frame)
            driver.switch_to.frame(frame)
            try:
                stats = _wait(driver, "NiiVue to draw the image and the labels", _niivue_drawn, 120)
            finally:
                driver.switch_to.default_content()
            print(f"\nNiiVue canvas: {stats}")
            driver.save_screenshot(str(tmp_path / "app_niivue.png"))
            print(f"screenshot: {tmp_path / 'app_niivue.png'}")
            # the plain-image viewer (no WebGL needed)
            driver.find_element(By.XPATH, "//label[contains(., 'Slices (plain images')]").click()

            def overlays(d):
                """The rendered overlay images (loaded, and laid out larger than 100 px)."""
                imgs = d.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')
                loaded = [i for i in imgs if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0;", i)
                          and i.size["width"] > 100 and i.size["height"] > 100]
                return loaded if len(loaded) >= 3 else None

            _wait(driver, "the three overlay views", overlays, 150)
            def tables_with(*words):
                return lambda d: [t for t in d.find_elements(By.CSS_SELECTOR, '[data-testid="stTable"]') if all(w in t.text for w in words)] or None

            volumes = _wait(driver, "the volumes table", tables_with("volume (ml)"), 60)[0].text
            dice = _wait(driver, "the Dice table", tables_with("HD95"), 60)[0].text
            quality = _wait(driver, "the quality table", tables_with("predicted Dice"), 60)[0].text
            assert "whole tumour (WT)" in quality
            assert "peritumoral edema" in volumes and "enhancing tumour" in volumes
            wt_ml = float(re.search(r"whole tumour \(WT = 1 \+ 2 \+ ET\)\s+([0-9.]+)", volumes).group(1))
            assert wt_ml > 1.0, volumes
            dice_wt = float(re.search(r"whole tumour \(WT\)\s+([0-9.]+)", dice).group(1))
            assert 0.0 <= dice_wt <= 1.0, dice
            assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')

            # uploads went to this session's temporary folder only
            sessions = list(tmp_path.glob("brainseg3d-app-*"))
            assert len(sessions) == 1, sessions
            uploaded = sorted(p.name for p in sessions[0].glob("uploads/*/*"))
            assert uploaded == sorted(f.name for f in files), uploaded

            # the axial slider moves the axial view
            caption = re.search(r"axial (\d+) / (\d+)", _text(driver))
            z = int(caption.group(1))
            slider = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"][aria-label="Axial slice"]')
            assert slider.get_attribute("value") == str(z)
            driver.execute_script("arguments[0].focus();", slider)  # the range input is visually hidden: keyboard, as a person would
            ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
            _wait(driver, "the axial view to move one slice", lambda d: f"axial {z + 1} / {caption.group(2)}" in _text(d), 30)

            # the error overlay (whole-tumour false positives / negatives against the uploaded seg)
            driver.find_element(By.XPATH, "//label[contains(., 'Errors vs ground truth')]").click()
            _wait(driver, "the error legend", lambda d: re.search(r"false positives [0-9.]+ ml, false negatives [0-9.]+ ml", _text(d)), 30)

            # model comparison: the copy of the bundle, side by side with timings
            box = driver.find_element(By.CSS_SELECTOR, '[data-testid="stMultiSelect"] input')
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
            box.click()
            box.send_keys("brats_copy")
            box.send_keys(Keys.ENTER)
            compared = _wait(driver, "the comparison table", tables_with("brats_copy", "seconds"), 150)[0]
            rows = compared.text.splitlines()
            assert any(r.startswith("brats_mri_2p5d_segmentation") for r in rows) and any(r.startswith("brats_copy") for r in rows), rows
            assert len(overlays(driver)) >= 5

            button = next(b for b in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stDownloadButton"] button') if "mask" in b.text)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
            button.click()
            target = downloads / f"{case_id}.nii.gz"
            _wait(driver, f"the downloaded {target.name}", lambda d: target.exists() and not list(downloads.glob("*.crdownload")), 30)
            driver.execute_script("window.scrollTo(0, 0);")
            shot = tmp_path / "app_screenshot.png"
            driver.save_screenshot(str(shot))
            print(f"\nscreenshot: {shot}")
        finally:
            driver.quit()
    app_seconds = time.time() - t0
    assert not list(tmp_path.glob("brainseg3d-app-*")), "the session folder outlived the server"

    # the same case through the Predictor, as `brainseg3d segment --precision fp32` runs it
    ref = Predictor(precision="fp32").segment_case(discover(case_dir)[0]).label
    got = nib.load(str(target))
    assert got.get_data_dtype() == np.uint8
    assert got.shape == ref.shape and np.allclose(got.affine, ref.affine)
    diff = int((np.asarray(got.dataobj) != np.asarray(ref.dataobj)).sum())
    assert diff == 0, f"{diff} voxels differ between the app's mask and the Predictor's"
    voxel_ml = abs(np.linalg.det(ref.affine[:3, :3])) / 1000
    assert abs(label_volumes_ml(np.asarray(ref.dataobj), voxel_ml)["whole_tumour_ml"] - wt_ml) < 0.01  # the table's number
    print(f"app part {app_seconds:.0f} s; mask identical ({np.count_nonzero(np.asarray(got.dataobj))} tumour voxels)")
