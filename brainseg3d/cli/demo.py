"""Segment the shipped sample case and print its Dice (``brainseg3d demo``)."""

from __future__ import annotations

import sys
from pathlib import Path

from brainseg3d.cli._common import _out

#: the sample cases shipped as package data (a link to the repository's sample_data/ in a checkout)
SAMPLE_DATA = (Path(__file__).resolve().parents[1] / "_data" / "sample_data").resolve()


def run(args) -> int:
    """Segment the sample case shipped in the repo and score it against its ground truth."""
    from brainseg3d.inference.batch import segment_cases
    from brainseg3d.core.cases import discover
    from brainseg3d.evaluation.metrics import evaluate_folder
    from brainseg3d.inference.predictor import Predictor

    sample = Path(args.sample)
    cases = discover(sample)
    predictor = Predictor(args.bundle)
    results = segment_cases(cases, args.out, predictor, overwrite=True, preview=True, colour_table=True, progress=not args.quiet)
    for r in results:
        print(r.path if r.status == "ok" else f"FAILED {r.case_id}: {r.error}")
    summary = evaluate_folder(args.out, sample)
    for row in summary["cases"]:
        print(f"{row['case']}: Dice WT {row['Dice_WT']:.3f}  TC {row['Dice_TC']:.3f}  ET {row['Dice_ET']:.3f}  "
              f"(HD95 mm WT {row['HD95_WT']:.1f} TC {row['HD95_TC']:.1f} ET {row['HD95_ET']:.1f})")
    print("note: the sample is one of the model's training cases, so this Dice shows the pipeline works, not how "
          "accurate it is on new patients; cross-validated scores: README, Results", file=sys.stderr)
    return 0 if all(r.status == "ok" for r in results) else 1


def add_parser(sub) -> None:
    """Register the ``demo`` command on the top-level subparsers."""
    s = sub.add_parser("demo", help="segment the bundled sample case and print its Dice")
    s.add_argument("--sample", default=str(SAMPLE_DATA), help="folder of sample cases (default: the shipped sample)")
    _out(s, "--output-dir", default="outputs/demo", help="where the mask, report and preview go")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=run)
