"""The command line: every subcommand describes itself and every argument has help."""

from __future__ import annotations

import argparse

import pytest

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


def test_one_module_per_command():
    """Each top-level command is registered by its own module of brainseg3d.cli, named after it."""
    from brainseg3d import cli

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    modules = {m.__name__.rsplit(".", 1)[1] for m in cli.COMMANDS}
    assert set(sub.choices) == modules
    for m in cli.COMMANDS:
        assert callable(m.add_parser), m.__name__
    for name, p in sub.choices.items():  # the function a command runs lives in its module
        func = p.get_default("func")
        if func is not None:
            assert func.__module__ == f"brainseg3d.cli.{name}", (name, func.__module__)


def test_app_options_come_from_one_parser(capsys):
    """`python -m brainseg3d.app.launch` takes the options of `brainseg3d app` (one parser)."""
    from brainseg3d.app import launch

    with pytest.raises(SystemExit) as e:
        launch.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "brainseg3d app" in out and "--max-upload-mb" in out and "--port" in out
    args = build_parser().parse_args(["app", "--port", "0", "--max-upload-mb", "5"])
    assert (args.port, args.max_upload_mb) == (0, 5)


def test_views_option_names_a_wrong_view(capsys, tmp_path):
    for argv in (["segment", str(tmp_path), str(tmp_path / "out"), "--views", "axial,transverse"],
                 ["cv", "score", str(tmp_path), "--views", "axial,axial"],
                 ["cv", "export", str(tmp_path), "--views", ""]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "views must be distinct names from ['axial', 'coronal', 'sagittal']" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_fill_core_holes_options(tmp_path):
    """``segment --no-fill-core-holes`` turns the bundle's core hole filling off (the report says which
    setting was applied); ``cv score --fill-core-holes`` scores with it instead of the search."""
    import json

    import numpy as np

    from ..conftest import REPO, write_case

    write_case(tmp_path / "in" / "Small_001", "Small_001")
    shipped = json.loads((REPO / "bundles" / "brats_mri_2p5d_segmentation" / "configs" / "inference.json").read_text())
    for flag, expect in (([], shipped["fill_core_holes"]), (["--no-fill-core-holes"], False), (["--fill-core-holes"], True)):
        out = tmp_path / f"out{len(flag)}{expect}"
        assert main(["segment", str(tmp_path / "in"), str(out), "--quiet", "--precision", "fp32", "--members", "1", "--views", "axial", *flag]) == 0
        assert json.loads((out / "Small_001.json").read_text())["postprocessing"]["fill_core_holes"] is expect
    # cv score with the rule fixed: a core predicted as a rim around edema scores TC 1 once filled
    gt = np.zeros((3, 16, 16, 16), bool)
    gt[0, 1:15, 1:15, 1:15] = gt[1, 3:12, 3:12, 3:12] = True
    pred = gt.astype(np.float32)
    pred[1, 4:11, 4:11, 4:11] = 0  # the core's centre read as edema
    d = tmp_path / "run" / "fold0" / "oof"
    d.mkdir(parents=True)
    np.savez_compressed(d / "Brats18_R_1.npz", prob=(pred * 255).astype(np.uint8), label=gt.astype(np.uint8), case="Brats18_R_1", source="adult")
    assert main(["cv", "score", str(tmp_path / "run"), "--fill-core-holes", "--out", str(tmp_path / "scored")]) == 0
    doc = json.loads((tmp_path / "scored" / "cv.json").read_text())
    assert doc["postprocessing"]["fill_core_holes"] is True and doc["postprocessed"]["all"]["Dice_TC"]["mean"] == 1.0
    assert doc["raw"]["all"]["Dice_TC"]["mean"] < 0.9
