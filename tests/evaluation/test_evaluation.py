import json

import nibabel as nib
import numpy as np
import pytest

from brainseg3d.cli import main
from brainseg3d.evaluation.metrics import EMPTY_HD95, evaluate_folder, region_scores


def _gt():
    gt = np.zeros((40, 40, 40), np.uint8)
    gt[10:30, 10:30, 10:20] = 2  # 4000 voxels of edema
    gt[15:25, 15:25, 10:20] = 1  # core 1000
    gt[18:22, 18:22, 10:20] = 4  # ET 160
    return gt


def test_known_dice_and_hd95():
    gt = _gt()
    s = region_scores(gt, gt)
    assert all(s[f"Dice_{r}"] == pytest.approx(1.0) for r in ("WT", "TC", "ET"))
    assert all(s[f"HD95_{r}"] == pytest.approx(0.0) for r in ("WT", "TC", "ET"))
    pred = np.zeros_like(gt)
    pred[10:30, 10:30, 15:25] = 2  # WT shifted by 5 slices: overlap 2000 of 4000 + 4000
    s = region_scores(pred, gt, spacing=(1, 1, 2))
    assert s["Dice_WT"] == pytest.approx(0.5)
    assert s["HD95_WT"] == pytest.approx(10.0, abs=0.5)  # 5 slices of 2 mm
    # TC and ET missing in the prediction: Dice 0 and the BraTS penalty distance
    assert s["Dice_TC"] == 0.0 and s["HD95_TC"] == pytest.approx(EMPTY_HD95)


def test_empty_region_conventions():
    gt = _gt()
    gt[gt == 4] = 1  # no ET in ground truth
    pred = gt.copy()
    s = region_scores(pred, gt)
    assert s["Dice_ET"] == 1.0 and s["HD95_ET"] == 0.0  # both empty
    pred[18:20, 18:20, 12] = 4
    s = region_scores(pred, gt)
    assert s["Dice_ET"] == 0.0 and s["HD95_ET"] == pytest.approx(373.13, abs=0.01)  # false positive ET
    # BraTS 2023 scheme (ET = 3) reads the same
    g23 = _gt()
    g23[g23 == 4] = 3
    assert region_scores(g23, _gt())["Dice_ET"] == pytest.approx(1.0)


def test_folder_missing_and_wrong_grid(tmp_path, capsys):
    gt_root, pred_dir = tmp_path / "gt", tmp_path / "pred"
    pred_dir.mkdir()
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    for cid in ("A", "B", "C"):
        (gt_root / cid).mkdir(parents=True)
        for m in ("t1", "t1ce", "t2", "flair"):
            nib.save(nib.Nifti1Image(np.ones((40, 40, 40), np.int16), aff), str(gt_root / cid / f"{cid}_{m}.nii.gz"))
        nib.save(nib.Nifti1Image(_gt(), aff), str(gt_root / cid / f"{cid}_seg.nii.gz"))
    nib.save(nib.Nifti1Image(_gt(), aff), str(pred_dir / "A.nii.gz"))
    nib.save(nib.Nifti1Image(_gt(), np.diag([2.0, 1, 1, 1])), str(pred_dir / "B.nii.gz"))
    out = tmp_path / "m.csv"
    summary = evaluate_folder(pred_dir, gt_root, out)
    assert [r["case"] for r in summary["cases"]] == ["A"]
    errs = {e["case"]: e["error"] for e in summary["errors"]}
    assert "not on the ground truth grid" in errs["B"] and errs["C"] == "prediction missing"
    assert summary["mean"]["Dice_WT"] == pytest.approx(1.0)
    assert out.read_text().count("\n") == 4 and json.loads(out.with_suffix(".json").read_text())["n_cases"] == 1
    assert main(["evaluate", str(pred_dir), str(gt_root)]) == 1
    cap = capsys.readouterr()
    assert "ERROR C: prediction missing" in cap.err and cap.out.startswith("case\tDice_WT")
