"""Would an enhancement gate on the predicted enhancing tumour pay? An analysis of out-of-fold predictions.

Enhancing tumour is, by definition, bright on T1c. This keeps a predicted ET voxel only where the z-scored
T1c (feature ``t1c``) or T1c minus T1 (``sub``) exceeds a threshold, the rest of the predicted ET becoming
necrotic core (it stays in TC), and scores ET Dice on the out-of-fold cases of a scored CV run, for every
threshold and nested (each fold's threshold chosen on the other folds). Beside it, per case, the mean z-scored
T1c in the ground-truth ET, in the predicted ET and in the false-positive ET: whether the misses are
enhancement the model reads wrong or labels that do not enhance.

    .venv/bin/python benchmarks/et_gate.py RUN --root extra=EXTRA_DIR \\
        --post bundles/brats_mri_2p5d_segmentation/docs/training/cv_soup_views3r_views/postprocessing.json \\
        --out bundles/brats_mri_2p5d_segmentation/docs/training/cv_soup_views3r_views/et_gate

RUN: a CV run whose folds hold three-view out-of-fold predictions (``fold<i>/oof_axial+coronal+sagittal/``,
written by ``brainseg3d cv score RUN --views axial,coronal,sagittal``; ``benchmarks/rescore_shipped.sh`` makes
them for the shipped members). Writes OUT.json and OUT.md. About 10 minutes on a 2-core CPU (the images are
read and preprocessed again, as the fold models read them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainseg3d.data.pool import load_pool, parse_roots  # noqa: E402
from brainseg3d.evaluation.metrics import binary_dice  # noqa: E402
from brainseg3d.inference.postprocessing import postprocess_regions  # noqa: E402
from brainseg3d.io import write_record  # noqa: E402
from brainseg3d.preprocessing.transforms import preprocessing  # noqa: E402
from brainseg3d.training.cv import load_oof  # noqa: E402

GATES = [None, -1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5]  # None: no gate (the shipped rule)
FEATURES = ("t1c", "sub")


def _mean(img: np.ndarray, mask: np.ndarray) -> float | None:
    return float(img[mask].mean()) if mask.any() else None


def case_rows(run: str, pool: str, roots: dict, post: dict) -> list[dict]:
    """Per case: ET Dice for every feature and gate, and the mean z-scored T1c / T1c - T1 in the ET masks."""
    items = {it["case"]: it for it in load_pool(pool, roots)}
    chain = preprocessing(["image", "label"], normalize="zscore")
    rows = []
    for n, oof in enumerate(load_oof(run, "oof_axial+coronal+sagittal"), 1):
        d = chain(dict(items[oof["case"]]))
        img = np.asarray(d["image"], dtype=np.float32)
        gt = np.asarray(d["label"]).astype(bool)
        if gt.shape != oof["label"].shape or not (gt == oof["label"]).all():
            raise ValueError(f"{oof['case']}: the preprocessed label differs from the one the prediction was scored on")
        pred = postprocess_regions(oof["prob"], **post)[2]
        feats = {"t1c": img[1], "sub": img[1] - img[0]}
        row = {"case": oof["case"], "source": oof["source"], "fold": oof["fold"]}
        for f in FEATURES:
            for g in GATES:
                row[f"{f}:{g}"] = binary_dice(pred if g is None else pred & (feats[f] > g), gt[2])
        row |= {"t1c_gt_et": _mean(img[1], gt[2]), "t1c_pred_et": _mean(img[1], pred),
                "t1c_false_et": _mean(img[1], pred & ~gt[2]), "sub_gt_et": _mean(feats["sub"], gt[2]),
                "sub_pred_et": _mean(feats["sub"], pred)}
        rows.append(row)
        print(f"[{n}] {oof['case']}", file=sys.stderr, flush=True)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Mean ET Dice per feature and gate (all, adult, africa) and the nested gain over no gate."""
    groups = {"all": rows, **{s: [r for r in rows if r["source"] == s] for s in sorted({r["source"] for r in rows})}}
    table = {f"{f}:{g}": {k: float(np.mean([r[f"{f}:{g}"] for r in rs])) for k, rs in groups.items()}
             for f in FEATURES for g in GATES}
    nested = {}
    for f in FEATURES:
        gains, chosen = {k: [] for k in groups}, {}
        for fold in sorted({r["fold"] for r in rows}):
            inner = [r for r in rows if r["fold"] != fold]
            best = max(GATES, key=lambda g: (round(float(np.mean([r[f"{f}:{g}"] for r in inner])), 9), g is None))
            chosen[fold] = best
            for r in rows:
                if r["fold"] == fold:
                    for k in groups:
                        if k == "all" or r["source"] == k:
                            gains[k].append(r[f"{f}:{best}"] - r[f"{f}:None"])
        nested[f] = {"chosen": chosen, "gain": {k: float(np.mean(v)) for k, v in gains.items()}}
    return {"mean_et_dice": table, "nested": nested}


def markdown(res: dict) -> str:
    t = res["mean_et_dice"]
    groups = list(next(iter(t.values())))
    lines = ["| feature | gate (z) | " + " | ".join(f"ET Dice {k}" for k in groups) + " |",
             "|---|---|" + "---|" * len(groups)]
    for key, v in t.items():
        f, g = key.split(":")
        lines.append(f"| {f} | {'none' if g == 'None' else g} | " + " | ".join(f"{v[k]:.4f}" for k in groups) + " |")
    lines.append("")
    for f, n in res["nested"].items():
        lines.append(f"Nested ({f}): gates chosen per fold {n['chosen']}; ET Dice gain over no gate "
                     + ", ".join(f"{k} {g:+.4f}" for k, g in n["gain"].items()))
    lines += ["", "| case | source | ET Dice (no gate) | T1c z in ground-truth ET | in predicted ET | in false-positive ET |",
              "|---|---|---|---|---|---|"]
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    for r in sorted(res["cases"], key=lambda r: r["t1c:None"]):
        lines.append(f"| {r['case']} | {r['source']} | {r['t1c:None']:.3f} | {fmt(r['t1c_gt_et'])} | {fmt(r['t1c_pred_et'])} | {fmt(r['t1c_false_et'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--pool", default="data_lists/pool60.json")
    ap.add_argument("--root", action="append", metavar="NAME=PATH")
    ap.add_argument("--post", required=True, help="postprocessing.json of the record (thresholds and rules)")
    ap.add_argument("--out", required=True, help="OUT.json and OUT.md")
    a = ap.parse_args(argv)
    post = json.loads(Path(a.post).read_text())
    rows = case_rows(a.run, a.pool, parse_roots(a.root), post)
    res = {"run": a.run, "postprocessing": post, "gates": GATES, **summarize(rows), "cases": rows}
    print(write_record(res, markdown(res), a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
