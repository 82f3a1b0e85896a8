"""Merge the per-shard summaries of a sharded segment run (``brainseg3d merge``)."""

from __future__ import annotations

import sys
from pathlib import Path


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.inference.batch import merge_summaries

    summary = merge_summaries(args.output_dir)
    print(Path(args.output_dir) / "summary.json")
    print(f"{summary['ok']} ok, {summary['skipped']} skipped, {summary['failed']} failed over {summary['shards']} shard(s)", file=sys.stderr)
    return 1 if summary["failed"] else 0


def add_parser(sub) -> None:
    """Register the ``merge`` command on the top-level subparsers."""
    s = sub.add_parser("merge", help="merge the per-shard summaries of a sharded segment run into summary.json")
    s.add_argument("output_dir", help="the output folder all shards wrote into")
    s.set_defaults(func=run)

