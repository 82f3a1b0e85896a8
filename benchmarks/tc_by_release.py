"""Does the tumour core mean the same in every release? An analysis of out-of-fold predictions by BraTS release.

Per release of the pool (its datalist's ``release``: BraTS 2018, 2020/2021, BraTS-SSA 2023): the annotated and the
predicted core as a share of the whole tumour (medians), the predicted core over the annotated one, and the
tumour-core Dice for a range of TC probability thresholds (the record's other post-processing unchanged), with
each release's threshold chosen per fold on the other folds (nested) and a bootstrap 95 % interval of its gain
over the shipped threshold.

    .venv/bin/python benchmarks/tc_by_release.py RUN \\
        --post bundles/brats_mri_2p5d_segmentation/docs/training/cv_soup_views3r_views/postprocessing.json \\
        --out bundles/brats_mri_2p5d_segmentation/docs/training/cv_soup_views3r_views/tc_by_release

RUN: a CV run whose folds hold three-view out-of-fold predictions (``fold<i>/oof_axial+coronal+sagittal/``;
``benchmarks/rescore_shipped.sh`` makes them for the shipped members). Needs no images (a minute or two).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainseg3d.evaluation.metrics import binary_dice, nest_regions  # noqa: E402
from brainseg3d.inference.postprocessing import postprocess_regions  # noqa: E402
from brainseg3d.io import write_record  # noqa: E402
from brainseg3d.training.cv import load_oof  # noqa: E402

TC_THRESHOLDS = [0.2, 0.3, 0.4, 0.5, 0.6]


def _release(item_release: str) -> str:
    return "BraTS 2020/2021" if item_release in ("BraTS 2020", "BraTS 2021") else item_release


def case_rows(run: str, pool: str, post: dict) -> list[dict]:
    """Per case: release, fold, annotated / predicted TC and WT volumes (voxels), TC Dice per TC threshold."""
    releases = {it["case"]: _release(it.get("release", "?")) for it in json.loads(Path(pool).read_text())["training"]}
    rows = []
    for oof in load_oof(run, "oof_axial+coronal+sagittal"):
        gt = oof["label"]  # nested regions (LabelToRegions)
        row = {"case": oof["case"], "release": releases.get(oof["case"], "?"), "fold": oof["fold"],
               "gt_wt": int(gt[0].sum()), "gt_tc": int(gt[1].sum())}
        for t in TC_THRESHOLDS:
            th = list(post["thresholds"])
            th[1] = t
            pred = nest_regions(postprocess_regions(oof["prob"], **(post | {"thresholds": th})))  # as the label map reads them
            row[f"tc_dice:{t}"] = binary_dice(pred[1], gt[1])
            if t == post["thresholds"][1]:
                row["pred_wt"], row["pred_tc"] = int(pred[0].sum()), int(pred[1].sum())
        rows.append(row)
    return rows


def summarize(rows: list[dict], shipped: float, n_boot: int = 5000) -> dict:
    out = {}
    for rel in sorted({r["release"] for r in rows}):
        rs = [r for r in rows if r["release"] == rel]
        gains, chosen = [], {}
        for fold in sorted({r["fold"] for r in rs}):
            inner = [r for r in rs if r["fold"] != fold] or rs
            best = max(TC_THRESHOLDS, key=lambda t: (round(float(np.mean([r[f"tc_dice:{t}"] for r in inner])), 9), t == shipped))
            chosen[fold] = best
            gains += [r[f"tc_dice:{best}"] - r[f"tc_dice:{shipped}"] for r in rs if r["fold"] == fold]
        g = np.asarray(gains)
        boot = np.random.default_rng(0).choice(g, (n_boot, g.size)).mean(1)
        out[rel] = {
            "n": len(rs),
            "median_gt_tc_share": float(np.median([r["gt_tc"] / max(r["gt_wt"], 1) for r in rs])),
            "median_pred_tc_share": float(np.median([r["pred_tc"] / max(r["pred_wt"], 1) for r in rs])),
            "median_pred_over_gt_tc": float(np.median([r["pred_tc"] / max(r["gt_tc"], 1) for r in rs])),
            "tc_dice": {str(t): float(np.mean([r[f"tc_dice:{t}"] for r in rs])) for t in TC_THRESHOLDS},
            "nested": {"chosen": chosen, "gain": float(g.mean()), "ci95": [float(x) for x in np.percentile(boot, [2.5, 97.5])],
                       "better": int((g > 0.005).sum()), "worse": int((g < -0.005).sum())},
        }
    return out


def markdown(res: dict, shipped: float) -> str:
    lines = ["| release | n | annotated TC / WT (median) | predicted TC / WT | predicted / annotated TC | "
             + " | ".join(f"TC Dice t={t}" for t in TC_THRESHOLDS) + " | nested gain over t=" + f"{shipped} (95 % interval; better / worse) |",
             "|---|---|---|---|---|" + "---|" * len(TC_THRESHOLDS) + "---|"]
    for rel, s in res.items():
        n = s["nested"]
        lines.append(f"| {rel} | {s['n']} | {s['median_gt_tc_share']:.2f} | {s['median_pred_tc_share']:.2f} | "
                     f"{s['median_pred_over_gt_tc']:.2f} | " + " | ".join(f"{s['tc_dice'][str(t)]:.4f}" for t in TC_THRESHOLDS)
                     + f" | {n['gain']:+.4f} [{n['ci95'][0]:+.4f}, {n['ci95'][1]:+.4f}]; {n['better']} / {n['worse']} (chosen {sorted(set(n['chosen'].values()))}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--pool", default="data_lists/pool60.json", help="the pool datalist (its items' release)")
    ap.add_argument("--post", required=True, help="postprocessing.json of the record")
    ap.add_argument("--out", required=True, help="OUT.json and OUT.md")
    a = ap.parse_args(argv)
    post = json.loads(Path(a.post).read_text())
    shipped = float(post["thresholds"][1])
    if shipped not in TC_THRESHOLDS:
        raise SystemExit(f"the record's TC threshold {shipped} is not among {TC_THRESHOLDS}")
    rows = case_rows(a.run, a.pool, post)
    res = summarize(rows, shipped)
    print(write_record({"run": a.run, "postprocessing": post, "releases": res, "cases": rows}, markdown(res, shipped), a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
