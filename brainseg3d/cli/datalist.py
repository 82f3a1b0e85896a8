"""Write a patient-level MONAI datalist (``brainseg3d datalist``)."""

from __future__ import annotations

import sys
from pathlib import Path


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.data.datalist import make_datalist, write_datalist

    split = tuple(float(s) for s in args.split.split("/"))
    docs = make_datalist(args.root, split=split, seed=args.seed, folds=args.folds, dataset_dir=args.dataset_dir)
    out = Path(args.out)
    if isinstance(docs, list):
        for doc in docs:
            path = out.with_name(f"{out.stem}_fold{doc['fold']}{out.suffix}")
            write_datalist(doc, path, relative_to=path.parent)
            print(path)
    else:
        write_datalist(docs, out, relative_to=out.parent)
        print(out)
        print(" / ".join(f"{k} {len(docs[k])}" for k in ("training", "validation", "testing")), file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    """Register the ``datalist`` command on the top-level subparsers."""
    s = sub.add_parser("datalist", help="write a patient-level MONAI datalist (train/validation/test, or k folds)")
    s.add_argument("root", help="folder of labelled cases (any BraTS naming)")
    s.add_argument("--out", required=True, help="output JSON (with --folds: NAME_foldI.json)")
    s.add_argument("--split", default="70/15/15", help="train/validation/test percentages")
    s.add_argument("--folds", type=int, default=None, help="write K fold datalists (test split held out)")
    s.add_argument("--seed", type=int, default=0, help="shuffling seed of the split")
    s.add_argument("--dataset-dir", default=None, help="root the paths are relative to (default ROOT)")
    s.set_defaults(func=run)

