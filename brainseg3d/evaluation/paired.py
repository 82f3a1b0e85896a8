"""Paired comparison of two scorings of the same cases (two recipes' out-of-fold predictions).

Two cross-validated recipes are read on the same cases, so the question "is B better than A?" is
a paired one: per case, the difference of B's Dice and A's. This module reports, per region
and per source, both means, the mean paired difference with a percentile bootstrap 95 %
interval over cases, and how many cases got better, worse or stayed the same (a difference
within ``tie`` counts as the same). An interval that spans 0 says the cases do not tell the
two apart.

Inputs are per-case CSVs as ``brainseg3d cv score`` and ``brainseg3d evaluate`` write them
(``case``, optional ``source``, ``Dice_WT`` ...). Cases present in only one file are left out
and counted; error rows (no Dice) are left out of both.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from brainseg3d.core.labels import REGIONS

__all__ = ["read_scores", "bootstrap_ci", "paired_comparison", "format_comparison"]


def read_scores(path: str | os.PathLike, metric: str = "Dice") -> dict[str, dict]:
    """Per-case scores of a CSV: ``{case: {"source": str, "WT": float, "TC": ..., "ET": ...}}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file has no ``case`` or ``<metric>_<region>`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such per-case CSV (cv.csv / cv_raw.csv of `brainseg3d cv score`)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [f"{metric}_{r}" for r in REGIONS]
    header = set(rows[0]) if rows else set()
    missing = [c for c in ["case", *cols] if c not in header]
    if missing:
        raise ValueError(f"{path}: not a per-case score file (missing column(s) {', '.join(missing)})")
    out = {}
    for row in rows:
        try:
            vals = {r: float(row[c]) for r, c in zip(REGIONS, cols)}
        except (TypeError, ValueError):
            continue  # an error row (the case could not be scored)
        if any(math.isnan(v) for v in vals.values()):
            continue
        out[row["case"]] = {"source": row.get("source") or "all", **vals}
    return out


def bootstrap_ci(diff: np.ndarray, n_boot: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean of ``diff`` (cases resampled; deterministic for a seed)."""
    if diff.size < 2:
        return (float(diff.mean()), float(diff.mean())) if diff.size else (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired_comparison(a: str | os.PathLike, b: str | os.PathLike, metric: str = "Dice", tie: float = 0.005,
                      n_boot: int = 10000, seed: int = 0) -> dict:
    """Compare B with A on the cases both scored.

    Args:
        a: the reference per-case CSV.
        b: the candidate per-case CSV.
        metric: ``Dice`` (higher is better) or ``HD95`` (lower is better; differences are still B - A).
        tie: a difference of at most this counts as "same".
        n_boot: bootstrap resamples of the cases.
        seed: the bootstrap's seed (the result is deterministic).

    Returns:
        ``{"a", "b", "metric", "n_common", "only_a", "only_b", "groups": {group: {region: {...}}}}``
        with groups ``all`` and each source; per region ``n``, ``mean_a``, ``mean_b``, ``diff``,
        ``ci95``, ``better``, ``worse``, ``same``.

    Raises:
        ValueError: the two files share no case.
    """
    sa, sb = read_scores(a, metric), read_scores(b, metric)
    common = sorted(set(sa) & set(sb))
    if not common:
        raise ValueError(f"{a} and {b} share no scored case: they are not two readings of the same cases")
    sign = 1.0 if metric.lower() == "dice" else -1.0  # "better" means higher Dice, lower HD95
    sources = sorted({sa[c]["source"] for c in common})
    groups = {"all": common, **({s: [c for c in common if sa[c]["source"] == s] for s in sources} if len(sources) > 1 else {})}
    res: dict = {"a": str(a), "b": str(b), "metric": metric, "tie": tie, "n_common": len(common),
                 "only_a": sorted(set(sa) - set(sb)), "only_b": sorted(set(sb) - set(sa)), "groups": {}}
    for g, cases in groups.items():
        res["groups"][g] = {}
        for r in REGIONS:
            va = np.array([sa[c][r] for c in cases], float)
            vb = np.array([sb[c][r] for c in cases], float)
            d = vb - va
            lo, hi = bootstrap_ci(d, n_boot, seed)
            res["groups"][g][r] = {
                "n": len(cases), "mean_a": float(va.mean()), "mean_b": float(vb.mean()), "diff": float(d.mean()),
                "ci95": [lo, hi], "better": int((sign * d > tie).sum()), "worse": int((sign * d < -tie).sum()),
                "same": int((np.abs(d) <= tie).sum()),
            }
    return res


def format_comparison(res: dict) -> str:
    """A Markdown table of :func:`paired_comparison`'s result."""
    m = res["metric"]
    lines = [f"B = {res['b']}", f"A = {res['a']}", "",
             f"{res['n_common']} cases scored by both; per case B - A, 95 % bootstrap interval of the mean; "
             f"better / worse / same (within {res['tie']})" + ("" if m.lower() == "dice" else ", lower HD95 is better"), "",
             f"| source | region | n | {m} A | {m} B | B - A | 95 % interval | better / worse / same |", "|---|---|---|---|---|---|---|---|"]
    for g, regions in res["groups"].items():
        for r, s in regions.items():
            lines.append(f"| {g} | {r} | {s['n']} | {s['mean_a']:.3f} | {s['mean_b']:.3f} | {s['diff']:+.3f} | "
                         f"[{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}] | {s['better']} / {s['worse']} / {s['same']} |")
    for side in ("only_a", "only_b"):
        if res[side]:
            lines.append(f"\nLeft out, scored in {side[-1].upper()} only: {', '.join(res[side])}")
    return "\n".join(lines)
