"""Train configs under one time budget and score them (``brainseg3d compare``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.benchmarks.compare import compare

    rows = compare(args.configs, minutes=args.minutes, out_dir=args.runs_dir, report=args.out, dataset_dir=args.dataset_dir, threads=args.threads)
    if args.out:
        print(Path(args.out).read_text())
    return 0 if rows else 1


def add_parser(sub) -> None:
    """Register the ``compare`` command on the top-level subparsers."""
    s = sub.add_parser("compare", help="train configs under one time budget and score them on the test split")
    s.add_argument("configs", nargs="+", help="experiment YAMLs to compare")
    s.add_argument("--minutes", type=float, default=8.0, help="CPU minutes of training per config")
    s.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is a fair budget on a busy machine)")
    s.add_argument("--runs-dir", dest="runs_dir", default="runs/compare", help="folder of the runs")
    s.add_argument("--output", dest="runs_dir", default="runs/compare", help=argparse.SUPPRESS)  # the earlier spelling
    s.add_argument("--out", default=None, help="Markdown table")
    s.add_argument("--dataset-dir", default=None, help="where the datalist's relative paths start (default: the one it records)")
    s.set_defaults(func=run)

