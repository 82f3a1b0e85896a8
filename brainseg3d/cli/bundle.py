"""Maintain the MONAI bundle (``brainseg3d bundle sync``)."""

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


def add_parser(sub) -> None:
    """Register the ``bundle`` command on the top-level subparsers."""
    s = sub.add_parser("bundle", help="maintain the MONAI bundle")
    bs = s.add_subparsers(dest="bundle_command", required=True)
    s = bs.add_parser("sync", help="copy the package modules the bundle vendors into its scripts/ and check its version")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    s.add_argument("--check", action="store_true", help="only report what differs (exit 1 if anything does)")
    s.set_defaults(func=_sync)

