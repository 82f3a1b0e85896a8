"""Would weighting the three slice views per region pay? An analysis of out-of-fold predictions.

Inference averages the axial, coronal and sagittal readings with equal weights. This scores every
weighting on a grid (quarters, and the equal thirds) at thresholds 0.3 / 0.4 / 0.5, per region (WT, TC,
ET nested as the label map reads them, no component rules), on the out-of-fold cases of a CV run, and
the nested gain: each fold's weights and threshold chosen on the other folds, against the equal weights
with their threshold chosen the same way.

    .venv/bin/python benchmarks/view_weights.py runs/shipped_members \\
        --out bundles/brats_mri_2p5d_segmentation/docs/training/cv_soup_views3r_views_fp32/view_weights

RUN: a CV run whose folds hold one-view out-of-fold predictions (``fold<i>/oof_axial/``, ``oof_coronal/``,
``oof_sagittal/``, written by ``brainseg3d cv score RUN --views axial,coronal,sagittal``;
``benchmarks/rescore_shipped.sh`` makes them for the shipped members). Writes OUT.json and OUT.md. About
5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainseg3d.evaluation.metrics import binary_dice, nest_regions  # noqa: E402
from brainseg3d.io import write_record  # noqa: E402
from brainseg3d.training.cv import load_oof  # noqa: E402

VIEWS = ("axial", "coronal", "sagittal")
EQUAL = (1 / 3, 1 / 3, 1 / 3)
WEIGHTS = [tuple(x / 4 for x in w) for w in itertools.product(range(5), repeat=3) if sum(w) == 4] + [EQUAL]
THRESHOLDS = (0.3, 0.4, 0.5)
REGIONS = ("WT", "TC", "ET")


def _key(w, t) -> str:
    return "/".join(f"{x:.2f}" for x in w) + f"@{t}"


def case_rows(run: str) -> list[dict]:
    """Per case: the Dice of each region for every weighting and threshold."""
    per_view = {v: {o["case"]: o for o in load_oof(run, f"oof_{v}")} for v in VIEWS}
    cases = sorted(per_view[VIEWS[0]])
    if not cases:
        raise SystemExit(f"{run}: no fold*/oof_axial/*.npz (run `brainseg3d cv score {run} --views axial,coronal,sagittal`)")
    rows = []
    for n, case in enumerate(cases, 1):
        missing = [v for v in VIEWS if case not in per_view[v]]
        if missing:
            raise SystemExit(f"{case}: no out-of-fold prediction in view(s) {', '.join(missing)}")
        items = [per_view[v][case] for v in VIEWS]
        probs, gt = np.stack([i["prob"] for i in items]), nest_regions(items[0]["label"])
        row = {"case": case, "source": items[0]["source"], "fold": items[0]["fold"]}
        for w in WEIGHTS:
            fused = np.tensordot(np.asarray(w, np.float32), probs, axes=1)
            for t in THRESHOLDS:
                r = nest_regions(fused > t)
                row[_key(w, t)] = [binary_dice(r[i], gt[i]) for i in range(3)]
        rows.append(row)
        print(f"[{n}/{len(cases)}] {case}", file=sys.stderr, flush=True)
    return rows


def _best(rows: list[dict], region: int, weights) -> str:
    """The weighting and threshold with the best mean Dice of ``region`` (ties: equal weights, then 0.4)."""
    equal = _key(EQUAL, 0.4).split("@")[0]
    keys = [_key(w, t) for w in weights for t in THRESHOLDS]
    return max(keys, key=lambda k: (round(float(np.mean([r[k][region] for r in rows])), 9), k.split("@")[0] == equal, k.endswith("@0.4")))


def summarize(rows: list[dict]) -> dict:
    """Mean Dice per weighting (best threshold each) and the nested gain over equal weights, per region."""
    out = {}
    for i, region in enumerate(REGIONS):
        table = {_key(w, t): float(np.mean([r[_key(w, t)][i] for r in rows])) for w in WEIGHTS for t in THRESHOLDS}
        gains, chosen = [], {}
        for fold in sorted({r["fold"] for r in rows}):
            inner = [r for r in rows if r["fold"] != fold]
            outer = [r for r in rows if r["fold"] == fold]
            if not inner:
                continue
            k, k_eq = _best(inner, i, WEIGHTS), _best(inner, i, [EQUAL])
            chosen[fold] = k
            gains += [r[k][i] - r[k_eq][i] for r in outer]
        out[region] = {"mean_dice": table, "best": _best(rows, i, WEIGHTS), "nested_chosen": chosen,
                       "nested_gain": float(np.mean(gains)) if gains else None,
                       "nested_gain_se": float(np.std(gains) / np.sqrt(len(gains))) if gains else None}
    return out


def markdown(res: dict) -> str:
    lines = ["| region | equal weights, t 0.4 | best weighting (axial/coronal/sagittal @ threshold) | its Dice | nested gain over equal (± s.e.) |",
             "|---|---|---|---|---|"]
    for region, s in res["regions"].items():
        g = "-" if s["nested_gain"] is None else f"{s['nested_gain']:+.4f} ± {s['nested_gain_se']:.4f}"
        lines.append(f"| {region} | {s['mean_dice'][_key(EQUAL, 0.4)]:.4f} | {s['best']} | {s['mean_dice'][s['best']]:.4f} | {g} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--out", required=True, help="OUT.json and OUT.md")
    a = ap.parse_args(argv)
    rows = case_rows(a.run)
    cases = [{k: [round(d, 4) for d in v] if isinstance(v, list) else v for k, v in r.items()} for r in rows]  # per case, 4 places
    res = {"run": a.run, "weights": WEIGHTS, "thresholds": THRESHOLDS, "regions": summarize(rows), "cases": cases}
    print(write_record(res, markdown(res), a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
