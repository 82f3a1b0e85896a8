"""Per-case quality estimate: a predicted Dice per region and a "review this mask" flag.

A mask is only as useful as the user's idea of whether to trust it. From the model's own
probabilities we compute, per region (WT / TC / ET), two features that are cheap (no extra
network pass) and mean the same thing for one fold model on a held-out case and for each
member of the shipped ensemble on a new case:

* ``soft_dice``: the Dice between the probability map and its own thresholded mask,
  ``2 * sum(p * b) / (sum(p) + sum(b))`` with ``b = p > threshold``. It is 1 when the model is
  sure of every voxel and falls as more of the mask is made of hesitant voxels: the expected
  Dice of the mask if the probabilities were calibrated.
* ``penumbra``: the voxels the model gives some chance (``p > 0.1``) but leaves out of the
  mask, relative to the mask's volume (as ``log1p``, capped): a wide penumbra means the model
  could not place the boundary.
* ``largest_share``: the share of the mask in its largest connected component; a mask spread
  over many islands is often partly false positive.
* ``log_volume``: ``log10(1 + predicted ml)``; small regions score lower Dice for the same
  boundary error.

For an ensemble the features are computed per member and averaged (so they match the
single-model features the calibration was fitted on), and the members' agreement (mean
pairwise Dice of their masks) is reported beside them.

The calibration (:func:`fit_calibration`) is a per-region least-squares line from the
features to the true Dice, fitted on the cross-validated out-of-fold predictions of the
models that are shipped (every case predicted by a model that never saw it), and committed
with the bundle (``configs/quality.json``). The review rule flags a case whose predicted
whole-tumour Dice is under a threshold chosen as a quantile of the out-of-fold predictions
(``review_share``: the share of cases one is willing to check), or whose input raised a
warning (not skull-stripped, registered, ...).

A second rule reads the mask itself (:func:`core_caution`): a large tumour core with little
enhancing tumour in it (:data:`CORE_CAUTION`) is flagged too, because the split of such a core
into necrosis and enhancing tumour is where the model is least reliable (out of fold, the
cases it flags scored tumour-core and enhancing-tumour Dice far under the others, while their
whole tumour was as good).

``brainseg3d cv quality RUN`` fits it and validates it honestly: leave-one-out predictions
on the out-of-fold cases, Spearman correlation with the true Dice, and how many of the
poorly segmented cases are flagged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from brainseg3d.core.labels import REGIONS

__all__ = [
    "FEATURES",
    "region_features",
    "ensemble_features",
    "member_agreement",
    "fit_calibration",
    "predict_dice",
    "quality_block",
    "CORE_CAUTION",
    "core_caution",
    "leave_one_out",
    "validate",
    "load_calibration",
]

#: the features of one region, in the order of the calibration's coefficients (after the intercept)
FEATURES = ("soft_dice", "penumbra", "largest_share", "log_volume")
#: the features the shipped calibration uses: the penumbra alone correlated best with the true
#: Dice on the out-of-fold cases (``brainseg3d cv quality`` reports each feature set)
DEFAULT_FEATURES = ("penumbra",)
#: the probability above which a voxel outside the mask counts in the penumbra
PENUMBRA = 0.1
#: the penumbra counts the uncertain voxels within this many mm of the mask only (stray
#: far-away blobs, which the component rules remove, say little about the mask's own error)
PENUMBRA_REACH_MM = 6.0
#: the features are ratios of voxel counts: every STRIDE-th voxel along each axis estimates them
#: (1/8 of the voxels for 2), for the out-of-fold fit and at inference alike
STRIDE = 2


def region_features(prob, thresholds: Sequence[float], voxel_ml: float = 0.001, features: Sequence[str] = FEATURES,
                    stride: int = STRIDE, post: dict | None = None, reach_mm: float | None = PENUMBRA_REACH_MM) -> dict:
    """The quality features of one model's probabilities ``[3, ...]`` (WT, TC, ET).

    Args:
        prob: sigmoid probabilities, a tensor or array ``[3, X, Y, Z]`` in [0, 1].
        thresholds: the per-region thresholds that make the mask.
        voxel_ml: the volume of one voxel in ml (the preprocessed space is 1 mm: 0.001).
        features: which of :data:`FEATURES` to compute.
        stride: estimate the features on every ``stride``-th voxel along each axis.
        post: the component rules of the mask (``min_component``, ``min_fraction``, as the
            bundle's post-processing), applied to each member's thresholded mask.
        reach_mm: the penumbra counts voxels within this distance of the mask (``None``: all).

    Returns:
        ``{"WT": {"soft_dice": s, "penumbra": e, ...}, "TC": ..., "ET": ...}``.
    """
    return ensemble_features(torch.as_tensor(prob)[None], thresholds, voxel_ml, features, stride, post, reach_mm)


def candidate_box(member_probs) -> torch.Tensor:
    """The members' probabilities ``[M, 3, X, Y, Z]`` cropped to the box of the voxels that any
    member gives any region a chance (``p > PENUMBRA``): every feature lives there (the
    thresholds are above ``PENUMBRA``), and it is a small part of the brain."""
    p = torch.as_tensor(member_probs)
    if p.ndim != 5:
        return p
    hit = p.flatten(0, 1).amax(0) > PENUMBRA  # [X, Y, Z]
    if not bool(hit.any()):
        return p[..., :0, :0, :0]
    box = []
    for axis in range(3):
        idx = torch.nonzero(hit.any(dim=[a for a in range(3) if a != axis])).flatten()
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return p[(slice(None), slice(None), *box)]


def _strided(member_probs, stride: int) -> torch.Tensor:
    p = torch.as_tensor(member_probs)
    return p[..., ::stride, ::stride, ::stride] if stride > 1 and p.ndim >= 5 else p


def _member_masks(p: torch.Tensor, thresholds: Sequence[float], post: dict | None, stride: int) -> torch.Tensor:
    """Each member's thresholded regions ``[M, 3, X, Y, Z]``, with the component rules of ``post``
    (``min_component`` scaled to the sampled voxels)."""
    t = torch.tensor([float(x) for x in thresholds], dtype=p.dtype, device=p.device).reshape(1, 3, *([1] * (p.ndim - 2)))
    mask = p > t
    post = post or {}
    mc, mf = int(post.get("min_component", 0)), float(post.get("min_fraction", 0.0))
    if (mc > 0 or mf > 0) and p.ndim >= 5 and mask.numel():
        from brainseg3d.core.components import PostprocessRegions

        rule = PostprocessRegions(int(np.ceil(mc / stride**3)), 0, (0.5, 0.5, 0.5), mf)
        mask = torch.stack([rule(m) for m in mask])
    return mask


def box_dilate(x: torch.Tensor, r: int) -> torch.Tensor:
    """Max over the (2r + 1)^3 box around each voxel of ``x`` ``[B, C, D, H, W]``, as three 1D
    max pools (the box max is separable: the same result as one cubic ``max_pool3d``, at a
    fraction of its cost)."""
    k = 2 * r + 1
    x = torch.nn.functional.max_pool3d(x, (k, 1, 1), 1, (r, 0, 0))
    x = torch.nn.functional.max_pool3d(x, (1, k, 1), 1, (0, r, 0))
    return torch.nn.functional.max_pool3d(x, (1, 1, k), 1, (0, 0, r))


def ensemble_features(member_probs, thresholds: Sequence[float], voxel_ml: float = 0.001,
                      features: Sequence[str] = DEFAULT_FEATURES, stride: int = STRIDE, post: dict | None = None,
                      reach_mm: float | None = PENUMBRA_REACH_MM) -> dict:
    """:func:`region_features` of each member ``[M, 3, X, Y, Z]``, averaged over the members
    (vectorized over members and regions, on every ``stride``-th voxel inside
    :func:`candidate_box`). ``soft_dice`` sums the probabilities inside that box only;
    ``log_volume`` and ``largest_share`` count the sampled voxels (scaled by ``stride**3``).
    The masks get the component rules of ``post``; the penumbra counts the voxels within
    ``reach_mm`` of the mask (1 mm voxels, as the preprocessed space has)."""
    member_probs = _strided(candidate_box(member_probs), stride)
    spatial = torch.as_tensor(member_probs).float()
    voxel_ml = voxel_ml * (stride ** 3 if spatial.ndim >= 5 else 1)
    mask_sp = _member_masks(spatial, thresholds, post, stride)
    p = spatial.flatten(2)  # [M, 3, N]
    mask = mask_sp.flatten(2)
    size = mask.sum(-1).double()  # [M, 3]
    per = {"log_volume": torch.log10(1.0 + size * voxel_ml)}
    if "soft_dice" in features:
        sp, inter = p.sum(-1).double(), (p * mask).sum(-1).double()
        per["soft_dice"] = torch.where(sp + size > 0, 2.0 * inter / (sp + size).clamp_min(1e-12), torch.ones_like(sp))
    if "penumbra" in features:
        near = torch.ones_like(mask)
        if reach_mm is not None and spatial.ndim >= 5 and mask.numel():
            r = max(1, int(round(reach_mm / stride)))
            near = box_dilate(mask_sp.float().flatten(0, 1)[:, None], r)[:, 0] > 0
            near = near.reshape(mask_sp.shape).flatten(2)
        shell = ((p > PENUMBRA) & ~mask & near).sum(-1).double()
        per["penumbra"] = torch.log1p((shell / size.clamp_min(1.0)).clamp_max(10.0))
    if "largest_share" in features:
        from scipy import ndimage

        shape = torch.as_tensor(member_probs).shape[2:]
        share = torch.ones_like(size)
        for m in range(p.shape[0]):
            for i in range(3):
                components, n = ndimage.label(mask[m, i].reshape(shape).cpu().numpy(), structure=np.ones((3, 3, 3), bool))
                if n:
                    share[m, i] = float(np.bincount(components.ravel())[1:].max()) / float(size[m, i])
        per["largest_share"] = share
    return {r: {f: float(per[f][:, i].mean()) for f in features} for i, r in enumerate(REGIONS)}


def member_agreement(member_probs, thresholds: Sequence[float], stride: int = STRIDE) -> dict:
    """Mean pairwise Dice of the members' masks per region (1.0 for a single member, or when
    two members both predict the region empty), on every ``stride``-th voxel."""
    p = _strided(candidate_box(member_probs), stride).float().flatten(2)
    t = torch.tensor([float(x) for x in thresholds], dtype=p.dtype, device=p.device).reshape(1, 3, 1)
    mask = p > t
    m = mask.shape[0]
    size = mask.sum(-1).double()
    out = {}
    for i, region in enumerate(REGIONS):
        pairs = []
        for a in range(m):
            for b in range(a + 1, m):
                total = float(size[a, i] + size[b, i])
                pairs.append(1.0 if total == 0 else 2.0 * float((mask[a, i] & mask[b, i]).sum()) / total)
        out[region] = float(np.mean(pairs)) if pairs else 1.0
    return out


def _design(features: Sequence[dict], region: str, use: Sequence[str]) -> np.ndarray:
    return np.array([[1.0] + [f[region][k] for k in use] for f in features], dtype=np.float64)


def fit_calibration(features: Sequence[dict], dice: Sequence[dict], review_share: float = 0.2, ridge: float = 1e-3,
                    use: Sequence[str] = DEFAULT_FEATURES) -> dict:
    """Fit the feature -> Dice lines, one per region, and the review threshold.

    Args:
        features: per case, :func:`region_features` (or :func:`ensemble_features`).
        dice: per case, the true Dice ``{"WT": d, "TC": d, "ET": d}``.
        review_share: the share of the fitted cases whose predicted WT Dice falls under the
            review threshold (the threshold is that quantile of the fitted predictions).
        ridge: a small L2 penalty on the slopes (not the intercept), for few cases.
        use: the features the lines use.

    Returns:
        ``{"features": [...], "coef": {region: [intercept, *slopes]}, "review_wt_dice": t,
        "review_share": s, "n": n}``.
    """
    if len(features) != len(dice) or len(features) < 3:
        raise ValueError(f"need the features and Dice of at least 3 cases, got {len(features)} and {len(dice)}")
    coef = {}
    for region in REGIONS:
        x = _design(features, region, use)
        y = np.array([d[region] for d in dice], dtype=np.float64)
        penalty = ridge * len(y) * np.diag([0.0] + [1.0] * len(use))
        coef[region] = [float(c) for c in np.linalg.solve(x.T @ x + penalty, x.T @ y)]
    calib = {"features": list(use), "penumbra_probability": PENUMBRA, "penumbra_reach_mm": PENUMBRA_REACH_MM, "coef": coef,
             "review_share": float(review_share), "n": len(features)}
    wt = [predict_dice(calib, f)["WT"] for f in features]
    calib["review_wt_dice"] = float(np.quantile(wt, review_share))
    return calib


def predict_dice(calibration: dict, features: dict) -> dict:
    """The predicted Dice per region, clipped to [0, 1]."""
    out = {}
    for region in REGIONS:
        c = calibration["coef"][region]
        value = c[0] + sum(ci * features[region][k] for ci, k in zip(c[1:], calibration["features"]))
        out[region] = float(min(1.0, max(0.0, value)))
    return out


#: a core of at least ``min_core_ml`` whose enhancing tumour is under ``max_et_share`` of it is flagged
#: (:func:`core_caution`). Chosen on the shipped models' 60 out-of-fold cases, where the enhancing share
#: of the predicted core falls in a gap: every cut-off from 0.09 to 0.17 flags the same six cases
CORE_CAUTION = {"min_core_ml": 10.0, "max_et_share": 0.1}


def core_caution(volumes: dict, rule: dict | None = None) -> str | None:
    """The review reason for a large core with little enhancing tumour in it, or None.

    Args:
        volumes: the final mask's volumes as the case report has them
            (:func:`brainseg3d.io.label_volumes_ml`: ``tumour_core_ml``, ``enhancing_tumour_ml``).
        rule: :data:`CORE_CAUTION` by default.
    """
    rule = rule or CORE_CAUTION
    tc, et = volumes["tumour_core_ml"], volumes["enhancing_tumour_ml"]
    if tc < rule["min_core_ml"] or et >= rule["max_et_share"] * tc:
        return None
    return (f"little enhancing tumour ({et:.1f} mL) in a large tumour core ({tc:.1f} mL): the split of the core into "
            f"necrosis and enhancing tumour is the least reliable part of such masks (lower-grade glioma look)")


def quality_block(calibration: dict, features: dict, warnings: Sequence[str] = (), agreement: dict | None = None,
                  volumes: dict | None = None) -> dict:
    """The ``quality`` block of a case report: predicted Dice, review flag and its reasons.

    Args:
        calibration: :func:`fit_calibration`'s result (the bundle's ``configs/quality.json``).
        features: the case's (ensemble) features.
        warnings: input warnings of the case (each is a reason for review).
        agreement: :func:`member_agreement`, reported as is.
        volumes: the report's volumes of the final mask, for :func:`core_caution` (skipped without).
    """
    pred = predict_dice(calibration, features)
    reasons = []
    if pred["WT"] < calibration["review_wt_dice"]:
        reasons.append(f"predicted whole-tumour Dice {pred['WT']:.2f} is under {calibration['review_wt_dice']:.2f} "
                       f"(the lowest {calibration['review_share']:.0%} of the cross-validated cases)")
    caution = core_caution(volumes) if volumes is not None else None
    if caution:
        reasons.append(caution)
    reasons += [f"input: {w}" for w in warnings]
    block = {"predicted_dice": {r: round(v, 3) for r, v in pred.items()}, "review": bool(reasons), "reasons": reasons}
    if agreement is not None:
        block["member_agreement"] = {r: round(v, 3) for r, v in agreement.items()}
    return block


def leave_one_out(features: Sequence[dict], dice: Sequence[dict], review_share: float = 0.2,
                  use: Sequence[str] = DEFAULT_FEATURES) -> list[dict]:
    """Each case's predicted Dice and review flag from a calibration fitted without it."""
    out = []
    for i in range(len(features)):
        rest = [j for j in range(len(features)) if j != i]
        calib = fit_calibration([features[j] for j in rest], [dice[j] for j in rest], review_share, use=use)
        pred = predict_dice(calib, features[i])
        out.append({"predicted_dice": pred, "review": pred["WT"] < calib["review_wt_dice"]})
    return out


def validate(features: Sequence[dict], dice: Sequence[dict], review_share: float = 0.2, poor: float = 0.75,
             use: Sequence[str] = DEFAULT_FEATURES) -> dict:
    """Honest figures of the estimate, from :func:`leave_one_out`.

    Returns:
        Per region the Spearman correlation of predicted and true Dice; the share of cases
        flagged; how many cases have true WT Dice under ``poor`` and the share of them flagged.
    """
    from scipy.stats import spearmanr

    loo = leave_one_out(features, dice, review_share, use)
    out = {"n": len(features), "features": list(use), "review_share": review_share, "poor_wt_dice": poor, "spearman": {}}
    for region in REGIONS:
        pred = [r["predicted_dice"][region] for r in loo]
        true = [d[region] for d in dice]
        rho = spearmanr(pred, true).statistic if np.std(pred) > 0 and np.std(true) > 0 else float("nan")
        out["spearman"][region] = float(rho)
    flagged = [r["review"] for r in loo]
    poor_cases = [i for i, d in enumerate(dice) if d["WT"] < poor]
    out["flagged_share"] = float(np.mean(flagged))
    out["n_poor"] = len(poor_cases)
    out["poor_flagged_share"] = float(np.mean([flagged[i] for i in poor_cases])) if poor_cases else float("nan")
    out["leave_one_out"] = [{"predicted_dice": r["predicted_dice"], "review": bool(r["review"]), "true_dice": d}
                            for r, d in zip(loo, dice)]
    return out


def load_calibration(bundle: str | os.PathLike) -> dict | None:
    """The bundle's ``configs/quality.json``, or ``None`` when it has none."""
    path = Path(bundle) / "configs" / "quality.json"
    return json.loads(path.read_text()) if path.exists() else None
