"""Score a training run's best model on a datalist split (``brainseg3d score``)."""

from __future__ import annotations

import json


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.benchmarks.compare import evaluate_run

    res = evaluate_run(args.run_dir, args.split, bf16=args.bf16)
    print(json.dumps(res, indent=2))
    if args.out:
        from brainseg3d.io import write_json

        write_json(res, args.out)
    return 0


def add_parser(sub) -> None:
    """Register the ``score`` command on the top-level subparsers."""
    s = sub.add_parser("score", help="per-volume Dice / HD95 of a training run's best model on a datalist split")
    s.add_argument("run_dir", help="a training run folder (best_model.pt, config.yaml)")
    s.add_argument("--split", default="validation", choices=["training", "validation", "testing"], help="which datalist split to score")
    s.add_argument("--bf16", action="store_true", help="infer under bfloat16 autocast")
    s.add_argument("--out", default=None, help="CSV per case (+ JSON summary beside it)")
    s.set_defaults(func=run)

