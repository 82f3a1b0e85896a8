"""Per-volume evaluation on the BraTS regions WT, TC, ET: Dice and HD95 (MONAI metrics).

Empty regions follow the BraTS challenge convention:

==========================  ======  ==================================================
ground truth / prediction   Dice    HD95
==========================  ======  ==================================================
both empty                  1       0
one empty, the other not    0       373.13 mm (the diagonal of a 240x240x155 1 mm grid)
==========================  ======  ==================================================

Both label schemes are read (ET = 4 up to BraTS 2021, ET = 3 from 2023): each map's ET
value is found from its own values.

A case that cannot be scored (prediction missing, unreadable, NaN or not on the ground truth's
grid; ground truth unreadable, empty or missing; a prediction without ground truth) is reported
as an error row with its reason, never skipped silently.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from brainseg3d.core.cases import discover
from brainseg3d.io import atomic_path, write_json
from brainseg3d.core.labels import REGIONS
from brainseg3d.preprocessing.transforms import LabelToRegions

__all__ = ["EMPTY_HD95", "nest_regions", "binary_dice", "region_scores", "evaluate_folder"]

#: HD95 when exactly one of prediction / ground truth is empty (BraTS convention)
EMPTY_HD95 = float(np.sqrt(240**2 + 240**2 + 155**2))


def nest_regions(r: np.ndarray) -> np.ndarray:
    """Binary regions ``[WT, TC, ET, ...]`` as the label map reads them (what
    :class:`~brainseg3d.core.components.RegionsToLabels` writes): WT = WT | TC | ET, TC = TC | ET."""
    return np.stack([r[0] | r[1] | r[2], r[1] | r[2], r[2]])


def binary_dice(p: np.ndarray, g: np.ndarray) -> float:
    """Dice of two boolean masks, 1 when both are empty (BraTS convention): the counting form of
    :func:`region_scores`' Dice, for searches that score many masks of one case."""
    ps, gs = int(p.sum()), int(g.sum())
    if ps == 0 and gs == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / (ps + gs)


def region_scores(pred: np.ndarray, gt: np.ndarray, spacing=(1.0, 1.0, 1.0), case_id: str = "case") -> dict[str, float]:
    """Dice and HD95 per BraTS region for two label maps on one grid.

    Returns:
        ``{"Dice_WT": ..., "Dice_TC": ..., "Dice_ET": ..., "HD95_WT": ..., ...}``.
    """
    conv = LabelToRegions("auto")
    p = conv(torch.as_tensor(np.asarray(pred)), f"{case_id} prediction")[None].bool()
    g = conv(torch.as_tensor(np.asarray(gt)), f"{case_id} ground truth")[None].bool()
    out: dict[str, float] = {}
    dice = compute_dice(p.float(), g.float(), include_background=True, ignore_empty=False)[0]
    for i, r in enumerate(REGIONS):
        pe, ge = not bool(p[0, i].any()), not bool(g[0, i].any())
        out[f"Dice_{r}"] = 1.0 if (pe and ge) else float(dice[i])
        if pe and ge:
            out[f"HD95_{r}"] = 0.0
        elif pe or ge:
            out[f"HD95_{r}"] = EMPTY_HD95
        else:
            with warnings.catch_warnings():
                # MONAI 1.5-1.6 passes its own deprecated `always_return_as_numpy` to get_mask_edges
                # inside compute_hausdorff_distance: a note for MONAI's developers, not our users
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
                hd = compute_hausdorff_distance(p[:, i : i + 1].float(), g[:, i : i + 1].float(), include_background=True,
                                                percentile=95, spacing=list(spacing))
            out[f"HD95_{r}"] = float(hd.flatten()[0])
    return out


def _load_labels(path: Path, what: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Read a label map; a trailing singleton dimension ``(X, Y, Z, 1)`` is squeezed.

    Raises:
        ValueError: unreadable or empty file, not 3D, NaN or non-integer values.
    """
    if path.stat().st_size == 0:
        raise ValueError(f"{what} is an empty file ({path.name})")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as e:  # nibabel / gzip raise many types for a damaged file
        raise ValueError(f"{what} is unreadable ({path.name}: {type(e).__name__}: {e})") from e
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{what} is not a 3D label map (shape {tuple(img.shape)})")
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise ValueError(f"{what} holds NaN or infinite values ({path.name})")
        if not (data == np.round(data)).all():
            raise ValueError(f"{what} holds non-integer values ({path.name}): not a label map")
    return img, data


def evaluate_folder(pred_dir: str | os.PathLike, gt_root: str | os.PathLike, out_csv: str | os.PathLike | None = None) -> dict:
    """Score ``pred_dir/<case>.nii.gz`` against every labelled case under ``gt_root``.

    Every case that can be scored is; every one that cannot is an error row with its reason
    (never skipped silently, never a traceback): a missing, unreadable, empty or NaN
    prediction, one not on the ground truth's grid, an unreadable or empty ground truth, a
    ground-truth case folder without a label, and a prediction without any ground truth. A
    prediction shaped ``(X, Y, Z, 1)`` is squeezed.

    Writes a CSV row per case (``out_csv``) and a JSON summary beside it (same name, ``.json``).

    Returns:
        ``{"mean": {...}, "cases": [...], "errors": [...]}``.
    """
    pred_dir = Path(pred_dir)
    rows, errors = [], []
    gt_ids = set()
    for case in discover(gt_root):
        gt_ids.add(case.case_id)
        row: dict = {"case": case.case_id}
        if case.label is None:
            row["error"] = f"no ground-truth label (<case>_seg.nii.gz) in {case.location()}"
            errors.append(row)
            continue
        pred_path = pred_dir / f"{case.case_id}.nii.gz"
        try:
            if not pred_path.exists():
                raise ValueError("prediction missing")
            gt, g = _load_labels(case.label, "the ground truth")
            pr, p = _load_labels(pred_path, "the prediction")
            if p.shape != g.shape or not np.allclose(pr.affine, gt.affine, atol=1e-3):
                raise ValueError(f"prediction not on the ground truth grid (shape {pr.shape} vs {gt.shape}, or affine differs)")
            spacing = tuple(float(s) for s in gt.header.get_zooms()[:3])
            row.update(region_scores(p, g, spacing, case.case_id))
        except ValueError as e:
            row["error"] = str(e)
        except Exception as e:  # a metric failure: named, and the others are still scored
            row["error"] = f"cannot score: {type(e).__name__}: {e}"
        (errors if "error" in row else rows).append(row)
    if pred_dir.is_dir():
        for f in sorted(pred_dir.iterdir()):
            name = f.name
            if name.startswith(".") or not name.endswith(".nii.gz") or name.endswith("_uncertainty.nii.gz"):
                continue
            case_id = name[: -len(".nii.gz")]
            if case_id not in gt_ids:
                errors.append({"case": case_id, "error": f"no ground truth for this prediction under {gt_root}"})
    keys = [f"{m}_{r}" for m in ("Dice", "HD95") for r in REGIONS]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys} if rows else {}
    summary = {"n_cases": len(rows), "n_errors": len(errors), "mean": mean, "cases": rows, "errors": errors,
               "empty_region_convention": "BraTS: both empty -> Dice 1, HD95 0; one empty -> Dice 0, HD95 373.13"}
    if out_csv:
        out_csv = Path(out_csv)
        with atomic_path(out_csv) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["case"] + keys + ["error"], restval="")
                w.writeheader()
                for r in rows + errors:
                    w.writerow({k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else v) for k, v in r.items()})
        write_json(summary, out_csv.with_suffix(".json"))
    return summary
