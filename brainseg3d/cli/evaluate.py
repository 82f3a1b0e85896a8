"""Dice and HD95 per case on WT / TC / ET (``brainseg3d evaluate``)."""

from __future__ import annotations

import sys
from pathlib import Path


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.evaluation.metrics import evaluate_folder
    from brainseg3d.io import OutputError, check_writable_dir

    if args.out:
        try:
            check_writable_dir(Path(args.out).parent)
        except OutputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        summary = evaluate_folder(args.pred_dir, args.gt_root, args.out)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and not e.filename:
            raise
        from brainseg3d.io import describe_os_error

        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    keys = list(summary["mean"])
    print("case\t" + "\t".join(keys))
    for r in summary["cases"]:
        print(r["case"] + "\t" + "\t".join(f"{r[k]:.4f}" for k in keys))
    if summary["mean"]:
        print("MEAN\t" + "\t".join(f"{summary['mean'][k]:.4f}" for k in keys))
    for e in summary["errors"]:
        print(f"ERROR {e['case']}: {e['error']}", file=sys.stderr)
    if summary["errors"]:
        print(f"{len(summary['cases'])} case(s) scored, {len(summary['errors'])} could not be scored", file=sys.stderr)
    if args.out:
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}", file=sys.stderr)
    return 1 if summary["errors"] or not summary["cases"] else 0


def add_parser(sub) -> None:
    """Register the ``evaluate`` command on the top-level subparsers."""
    s = sub.add_parser("evaluate", help="Dice and HD95 per case on WT / TC / ET")
    s.add_argument("pred_dir", help="folder of predicted masks (<case>.nii.gz)")
    s.add_argument("gt_root", help="folder of the cases with their labels (any BraTS naming)")
    s.add_argument("--out", default=None, help="CSV per case (+ JSON summary beside it)")
    s.set_defaults(func=run)

