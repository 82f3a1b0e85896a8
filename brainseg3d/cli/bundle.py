"""Maintain the MONAI bundle (``brainseg3d bundle sync``, ``brainseg3d bundle members``)."""

from __future__ import annotations

import sys


def _sync(args) -> int:
    """Run ``bundle sync``; returns its exit status."""
    from brainseg3d.bundle import sync_bundle

    try:
        drifted = sync_bundle(args.bundle, check=args.check)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    verb = "differs" if args.check else "copied"
    for d in drifted:
        print(f"{d}: {verb}")
    if not drifted:
        print("bundle scripts/ in sync with the package; version checked")
    return 1 if args.check and drifted else 0


def _members(args) -> int:
    """Run ``bundle members``; returns its exit status."""
    from brainseg3d.bundle import extract_members

    try:
        written = extract_members(args.out, args.bundle)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


def add_parser(sub) -> None:
    """Register the ``bundle`` command on the top-level subparsers."""
    s = sub.add_parser("bundle", help="maintain the MONAI bundle")
    bs = s.add_subparsers(dest="bundle_command", required=True)
    s = bs.add_parser("sync", help="copy the package modules the bundle vendors into its scripts/ and check its version")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    s.add_argument("--check", action="store_true", help="only report what differs (exit 1 if anything does)")
    s.set_defaults(func=_sync)
    s = bs.add_parser("members", help="write the ensemble's members as OUT/fold<i>/final_model.pt (to start an experiment from them)")
    s.add_argument("out", help="output folder (a cv run's layout)")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    s.set_defaults(func=_members)

