"""Write a training-pool datalist with stratified folds (``brainseg3d pool``)."""

from __future__ import annotations

import sys


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.data.pool import make_pool, parse_roots, write_pool

    doc = make_pool(parse_roots(args.root), folds=args.folds, seed=args.seed)
    print(write_pool(doc, args.out))
    counts = {}
    for it in doc["training"]:
        counts.setdefault(it["fold"], {}).setdefault(it["source"], 0)
        counts[it["fold"]][it["source"]] += 1
    for fold in sorted(counts):
        print(f"fold {fold}: " + ", ".join(f"{n} {src}" for src, n in sorted(counts[fold].items())), file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    """Register the ``pool`` command on the top-level subparsers."""
    s = sub.add_parser("pool", help="write a training pool datalist over several roots, with stratified patient-level folds")
    s.add_argument("--root", action="append", required=True, metavar="NAME=PATH", help="a data root, e.g. brats2018=../shared/data/brats2018 (repeat)")
    s.add_argument("--out", required=True, help="output JSON (roots stored relative to its folder)")
    s.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    s.add_argument("--seed", type=int, default=0, help="fold shuffling seed")
    s.set_defaults(func=run)

