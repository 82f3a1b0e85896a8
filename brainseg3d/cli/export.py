"""Put a training checkpoint into the bundle (``brainseg3d export``)."""

from __future__ import annotations


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.bundle import export_weights

    print(export_weights(args.checkpoint, args.bundle, torchscript=not args.no_torchscript))
    return 0


def add_parser(sub) -> None:
    """Register the ``export`` command on the top-level subparsers."""
    s = sub.add_parser("export", help="put a training checkpoint into the bundle (model.pt + TorchScript model.ts)")
    s.add_argument("checkpoint", help="a training run's best_model.pt / final_model.pt")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one, whose weights are replaced)")
    s.add_argument("--no-torchscript", action="store_true", help="skip models/model.ts")
    s.set_defaults(func=run)

