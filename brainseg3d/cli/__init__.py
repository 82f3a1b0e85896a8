"""``brainseg3d`` command line: one module per command, each a thin shell over the package.

Every command module has ``add_parser(sub)``, which registers the command and its options, and
the function the command runs (``run``, or one per sub-command as in ``cv``). Paths and tables go
to stdout; logs and progress bars go to stderr. Exit status is 0 only when everything asked for
succeeded; a user's mistake (a missing file, a bad value) is one ``error:`` line and status 2.

What a command writes is named by ``--out`` (a file or a folder, as its help says), except in
``segment`` and ``merge``, whose output folder is the second positional argument
(``brainseg3d segment IN OUT``); earlier spellings (``--output``, ``--output-dir``) are still
accepted.
"""

from __future__ import annotations

import argparse
import logging
import sys

from brainseg3d.cli import (app, bench, bundle, cases, compare, cv, datalist, demo, evaluate, export, merge, pool, score,
                            segment, train)
from brainseg3d.cli.segment import discover_inputs, parse_shard

__all__ = ["build_parser", "main", "COMMANDS", "discover_inputs", "parse_shard"]

#: the command modules, in the order ``brainseg3d --help`` lists them
COMMANDS = (cases, datalist, train, pool, cv, bundle, export, segment, merge, evaluate, compare, score, bench, demo, app)


def _describe(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand its one-line help as the description of its own ``--help``, and
    show defaults there."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                sub = action.choices[choice.dest]
                sub.description = sub.description or choice.help
                sub.formatter_class = argparse.ArgumentDefaultsHelpFormatter
                _describe(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``brainseg3d`` parser: every command module registers its own sub-parser."""
    from brainseg3d import __version__

    p = argparse.ArgumentParser(prog="brainseg3d", description="Brain tumour (BraTS) segmentation from multimodal MRI. Research use only, not a medical device.")
    p.add_argument("--version", action="version", version=f"brainseg3d {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    _describe(p)
    return p


def main(argv=None) -> int:
    """Run one command; returns its exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
