"""The command line: every subcommand describes itself and every argument has help."""

from __future__ import annotations

import argparse

from brainseg3d.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, path=("brainseg3d",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def test_every_subcommand_and_argument_has_help():
    missing = []
    for path, parser in _walk(build_parser()):
        if len(path) > 1 and not parser.description:
            missing.append(" ".join(path) + ": no description")
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help:
                missing.append(f"{' '.join(path)} {action.dest}: no help")
    assert not missing, missing


def test_subcommand_help_shows_description_and_defaults(capsys):
    try:
        main(["segment", "--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert "segment one case" in out and "(default: auto)" in out


def test_one_output_option_name_with_the_old_spellings_accepted():
    """Every optional output is --out; the earlier --output / --output-dir still parse (hidden)."""
    parser = build_parser()
    for path, sub in _walk(parser):
        flags = {f for a in sub._actions for f in a.option_strings if a.help != argparse.SUPPRESS}
        assert not flags & {"--output", "--output-dir"}, f"{' '.join(path)} shows {sorted(flags & {'--output', '--output-dir'})}"
    assert parser.parse_args(["train", "c.yaml", "--output", "r"]).out == "r"
    assert parser.parse_args(["cv", "train", "c.yaml", "--out", "r"]).out == "r"
    assert parser.parse_args(["demo", "--output-dir", "d"]).out == "d" and parser.parse_args(["demo"]).out == "outputs/demo"
    assert parser.parse_args(["compare", "a.yaml", "--output", "x"]).runs_dir == "x"
