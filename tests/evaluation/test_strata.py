"""Out-of-fold Dice by tumour size (``brainseg3d cv strata``) on hand-made label maps and scores."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from brainseg3d.cli import main
from brainseg3d.evaluation.strata import format_strata, pool_volumes, region_volumes, stratify

# case -> (source, enhancing-tumour voxels, Dice WT, TC, ET): ET volumes 0, 8, 27, 64, 125, 216 voxels
CASES = {"a1": ("adult", 0, 0.9, 0.8, 1.0), "a2": ("adult", 8, 0.8, 0.5, 0.2), "f1": ("africa", 27, 0.9, 0.7, 0.6),
         "a3": ("adult", 64, 0.95, 0.9, 0.8), "f2": ("africa", 125, 0.9, 0.9, 0.9), "a4": ("adult", 216, 0.85, 0.8, 0.7)}


def _label(path, et_side, scheme_et=4, spacing=2.0):
    """A 16^3 label map: edema slab (label 2, 4x16x16 voxels), necrosis (1, 2x2x2), and an ET cube of et_side^3."""
    a = np.zeros((16, 16, 16), np.uint8)
    a[:4] = 2
    a[6:8, 6:8, 6:8] = 1
    if et_side:
        a[8:8 + et_side, 8:8 + et_side, 8:8 + et_side] = scheme_et
    nib.save(nib.Nifti1Image(a, np.diag([spacing, spacing, spacing, 1.0])), str(path))
    return path


def _pool(tmp_path):
    """A pool datalist over one root (labels only: volumes need no images) and a cv.csv of the CASES' scores."""
    root = tmp_path / "data"
    root.mkdir()
    items = []
    for case, (src, et, *_) in CASES.items():
        _label(root / f"{case}_seg.nii.gz", round(et ** (1 / 3)), scheme_et=3 if src == "africa" else 4)
        items.append({"case": case, "root": "r", "source": src, "fold": 0, "image": [], "label": f"{case}_seg.nii.gz"})
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"roots": {"r": "data"}, "training": items}))
    rec = tmp_path / "record"
    rec.mkdir()
    with open(rec / "cv.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "source", "fold", "Dice_WT", "Dice_TC", "Dice_ET"])
        for case, (src, _, wt, tc, et) in CASES.items():
            w.writerow([case, src, 0, wt, tc, et])
        w.writerow(["not_in_pool", "adult", 0, 0.5, 0.5, 0.5])
    return pool, rec


def test_region_volumes_known(tmp_path):
    """Voxel counts times the voxel volume (2 mm: 8 uL), both label schemes, nested regions."""
    v = region_volumes(_label(tmp_path / "l.nii.gz", 3))
    assert v["ET"] == pytest.approx(27 * 0.008)
    assert v["TC"] == pytest.approx((27 + 8) * 0.008)
    assert v["WT"] == pytest.approx((27 + 8 + 4 * 16 * 16) * 0.008)
    assert region_volumes(_label(tmp_path / "l23.nii.gz", 3, scheme_et=3)) == v


def test_region_volumes_rejects_non_brats_labels(tmp_path):
    a = np.zeros((8, 8, 8), np.uint8)
    a[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(a, np.eye(4)), str(tmp_path / "bad.nii.gz"))
    with pytest.raises(ValueError, match="case_x"):
        region_volumes(tmp_path / "bad.nii.gz", "case_x")


def test_stratify_tertiles(tmp_path):
    """Six cases in three ET-volume tertiles of two cases each; means per stratum and per source."""
    pool, rec = _pool(tmp_path)
    vols = pool_volumes(pool)
    assert set(vols) == set(CASES) and vols["a4"]["ET"] == pytest.approx(216 * 0.008)
    scores = {c: {"source": s, "WT": wt, "TC": tc, "ET": et} for c, (s, _, wt, tc, et) in CASES.items()}
    scores["not_in_pool"] = {"source": "adult", "WT": 0.5, "TC": 0.5, "ET": 0.5}
    res = stratify(scores, vols, region="ET", strata=3)
    assert res["missing"] == ["not_in_pool"]
    strata = {c["case"]: c["stratum"] for c in res["cases"]}
    assert strata == {"a1": 0, "a2": 0, "f1": 1, "a3": 1, "f2": 2, "a4": 2}
    row = {(r["stratum"], r["source"]): r for r in res["rows"]}
    assert row[0, "all"]["n"] == 2 and row[0, "all"]["ET"] == pytest.approx(0.6) and row[0, "all"]["ET_std"] == pytest.approx(0.4)
    assert row[1, "africa"]["n"] == 1 and row[1, "africa"]["TC"] == pytest.approx(0.7)
    assert row[2, "adult"]["WT"] == pytest.approx(0.85) and row[0, "africa"]["n"] == 0
    assert res["edges"][0] == 0.0 and res["edges"][-1] == pytest.approx(216 * 0.008)
    text = format_strata(res)
    assert "| 0.00-" in text and "not_in_pool" in text
    with pytest.raises(ValueError, match="cannot make"):
        stratify(scores, vols, strata=7)
    with pytest.raises(ValueError, match="region"):
        stratify(scores, vols, region="XX")


def test_cli_strata(tmp_path, capsys):
    """`brainseg3d cv strata` writes the table, JSON and scatter; a wrong pool is a clear error."""
    pool, rec = _pool(tmp_path)
    assert main(["cv", "strata", str(rec), "--pool", str(pool), "--strata", "2"]) == 0
    out = capsys.readouterr().out
    assert "by ground-truth ET volume" in out
    res = json.loads((rec / "strata_ET.json").read_text())
    assert len(res["edges"]) == 3 and (rec / "strata_ET.png").stat().st_size > 0 and (rec / "strata_ET.md").exists()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"roots": {"r": "data"}, "training": []}))
    assert main(["cv", "strata", str(rec), "--pool", str(other)]) != 0
    assert "no scored case has a ground-truth volume" in capsys.readouterr().err
