"""Train a model from a YAML config (``brainseg3d train``)."""

from __future__ import annotations

import json
import os

from brainseg3d.cli._common import _out, _overrides


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.data.pool import parse_roots
    from brainseg3d.training.trainer import train

    summary = train(
        args.config,
        output=args.out,
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        resume=args.resume,
        dataset_dir=args.dataset_dir,
        device=args.device,
        overrides=_overrides(args.set),
        max_val_cases=args.max_val_cases,
        progress=not args.quiet,
        fold=args.fold,
        roots=parse_roots(args.root),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def add_parser(sub) -> None:
    """Register the ``train`` command on the top-level subparsers."""
    s = sub.add_parser("train", help="train a model from a YAML config (MONAI/Ignite engines)")
    s.add_argument("config", nargs="+", help="experiment YAML (configs/*.yaml); several are merged, later ones override key by key")
    _out(s, "--output", default=None, help="run folder (default runs/<name>)")
    s.add_argument("--max-epochs", type=int, default=None, help="override the config's train#max_epochs")
    s.add_argument("--max-steps", type=int, default=None, help="stop after N iterations (smoke run)")
    s.add_argument("--max-val-cases", type=int, default=None, help="validate on the first N validation cases")
    s.add_argument("--resume", default=None, help="checkpoint.pt of an earlier run")
    s.add_argument("--dataset-dir", default=None, help="where the datalist's relative paths start (default: the one it records)")
    s.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu or cuda")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. train#lr=0.001")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--fold", type=int, default=None, help="cross-validation fold of a pool datalist: train on the others, predict this one")
    s.add_argument("--root", action="append", metavar="NAME=PATH", help="where a pool root is (e.g. extra=/data/extra), over the recorded one")
    s.set_defaults(func=run)

