"""Out-of-fold Dice by tumour size: which cases a model fails on.

A mean Dice hides where the errors are. This module reads the ground-truth volume of each
region (mL, from the label map's voxel spacing) of every case of a pool datalist, groups the
per-case scores of a scored CV record (``cv.csv`` of ``brainseg3d cv score``) into strata of
one region's volume (quantiles over all scored cases: the strata have equal numbers of cases
and are chosen without looking at the scores), and reports each stratum's mean Dice per region,
overall and per source, with a scatter of Dice against volume (``brainseg3d cv strata``).

A case whose region is empty in the ground truth has volume 0 and falls in the lowest stratum;
its Dice follows the BraTS empty-region convention of the scores (1 when the prediction is empty
too, 0 otherwise).

Example:
    >>> from brainseg3d.evaluation.strata import pool_volumes, stratify
    >>> from brainseg3d.evaluation.paired import read_scores
    >>> res = stratify(read_scores("docs/training/cv/cv.csv"), pool_volumes("data_lists/pool60.json"))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
import torch

from brainseg3d.core.labels import REGIONS
from brainseg3d.core.training import load_pool
from brainseg3d.preprocessing.transforms import LabelToRegions

__all__ = ["region_volumes", "pool_volumes", "stratify", "format_strata", "plot_strata"]


def region_volumes(label_path: str | os.PathLike, case_id: str | None = None) -> dict[str, float]:
    """Volume (mL) of each BraTS region of one label map (either label scheme).

    Raises:
        ValueError: the label map has values that are not BraTS labels (naming the case).
    """
    img = nib.load(str(label_path))
    data = np.asarray(img.dataobj)
    regions = LabelToRegions("auto")(torch.as_tensor(data), f"{case_id or Path(label_path).name} ground truth")
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    return {r: float(regions[i].sum()) * voxel_ml for i, r in enumerate(REGIONS)}


def pool_volumes(pool: str | os.PathLike, roots: Mapping[str, str] | None = None,
                 cases: set[str] | None = None) -> dict[str, dict[str, float]]:
    """``{case: {"WT": mL, "TC": mL, "ET": mL}}`` for the labelled cases of a pool datalist.

    Args:
        pool: the pool datalist (``data_lists/pool60.json``).
        roots: root name -> folder, over the recorded ones (``--root extra=PATH``).
        cases: only these cases (default all).
    """
    out = {}
    for item in load_pool(pool, roots):
        if item.get("label") and (cases is None or item["case"] in cases):
            out[item["case"]] = region_volumes(item["label"], item["case"])
    return out


def stratify(scores: Mapping[str, dict], volumes: Mapping[str, dict], region: str = "ET", strata: int = 3) -> dict:
    """Mean Dice per region within strata of one region's ground-truth volume.

    Args:
        scores: per-case scores, ``{case: {"source": str, "WT": Dice, "TC": ..., "ET": ...}}``
            (:func:`brainseg3d.evaluation.paired.read_scores`).
        volumes: ``{case: {"WT": mL, ...}}`` (:func:`pool_volumes`).
        region: the region whose volume defines the strata.
        strata: number of strata (volume quantiles over the scored cases).

    Returns:
        ``{"region", "edges" (mL, strata + 1 values), "missing" (scored cases without volume),
        "rows": [{"stratum", "low", "high", "source", "n", "WT", "TC", "ET", "WT_std", ...}],
        "cases": [{"case", "source", "stratum", "volume_<r>", "Dice_<r>"}]}``.

    Raises:
        ValueError: unknown region, fewer cases than strata, or no scored case has a volume.
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(REGIONS)}, got {region!r}")
    names = sorted(c for c in scores if c in volumes)
    if not names:
        raise ValueError("no scored case has a ground-truth volume (is the pool datalist the one the record was scored on?)")
    if strata < 1 or len(names) < strata:
        raise ValueError(f"{len(names)} cases cannot make {strata} strata")
    vol = np.array([volumes[c][region] for c in names])
    edges = np.quantile(vol, np.linspace(0, 1, strata + 1))
    which = np.searchsorted(edges[1:-1], vol, side="left")  # the first stratum whose upper edge it does not exceed
    cases = [{"case": c, "source": scores[c]["source"], "stratum": int(k),
              **{f"volume_{r}": volumes[c][r] for r in REGIONS}, **{f"Dice_{r}": scores[c][r] for r in REGIONS}}
             for c, k in zip(names, which)]
    sources = ["all", *sorted({c["source"] for c in cases} - {"all"})]
    rows = []
    for k in range(strata):
        for src in sources:
            sel = [c for c in cases if c["stratum"] == k and src in ("all", c["source"])]
            row = {"stratum": k, "low": float(edges[k]), "high": float(edges[k + 1]), "source": src, "n": len(sel)}
            for r in REGIONS:
                d = np.array([c[f"Dice_{r}"] for c in sel], dtype=float)
                row[r] = float(d.mean()) if d.size else float("nan")
                row[f"{r}_std"] = float(d.std()) if d.size else float("nan")
            rows.append(row)
    return {"region": region, "edges": [float(e) for e in edges], "missing": sorted(set(scores) - set(volumes)),
            "rows": rows, "cases": cases}


def format_strata(res: dict, title: str | None = None) -> str:
    """The strata as a Markdown table (mean +/- std of per-volume Dice)."""
    reg = res["region"]
    lines = [f"### {title or 'Out-of-fold Dice'} by ground-truth {reg} volume", "",
             f"| {reg} volume (mL) | source | n | Dice WT | Dice TC | Dice ET |", "|---|---|---|---|---|---|"]
    for row in res["rows"]:
        if not row["n"]:
            continue
        cells = " | ".join(f"{row[r]:.3f} +/- {row[f'{r}_std']:.3f}" for r in REGIONS)
        lines.append(f"| {row['low']:.2f}-{row['high']:.2f} | {row['source']} | {row['n']} | {cells} |")
    if res["missing"]:
        lines += ["", f"Scored cases without a ground-truth volume (not in the pool): {', '.join(res['missing'])}"]
    return "\n".join(lines)


def plot_strata(res: dict, path: str | os.PathLike) -> Path:
    """Per-case Dice of each region against the ground-truth volume of ``res['region']`` (log scale), one colour per source."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(12, 3.8))
    axes = fig.subplots(1, len(REGIONS), sharey=True)
    reg = res["region"]
    sources = sorted({c["source"] for c in res["cases"]})
    floor = 0.01  # mL: an empty region is drawn at the axis' floor
    for ax, r in zip(axes, REGIONS):
        for src in sources:
            sel = [c for c in res["cases"] if c["source"] == src]
            ax.scatter([max(c[f"volume_{reg}"], floor) for c in sel], [c[f"Dice_{r}"] for c in sel], s=18, label=src, alpha=0.8)
        for e in res["edges"][1:-1]:
            ax.axvline(max(e, floor), color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(f"ground-truth {reg} volume (mL)")
        ax.set_title(f"Dice {r}")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("per-volume Dice (out-of-fold)")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)
    return path
