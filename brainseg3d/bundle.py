"""Put trained weights into the MONAI bundle: ``models/model.pt`` and TorchScript ``models/model.ts``.

``brainseg3d export RUN_DIR/best_model.pt`` wraps the trained 2D network in the bundle's
``network_def`` (the 3D-in / 3D-out :class:`SliceWise25D`), checks the shapes with MONAI's
``verify_net_in_out`` logic, saves the state dict and exports TorchScript with
``monai.bundle.ckpt_export``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .inference import DEFAULT_BUNDLE, load_bundle_network

__all__ = ["export_weights", "export_torchscript"]


def _load_state(checkpoint: str | os.PathLike) -> dict:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "network" in state and isinstance(state["network"], dict):
        state = state["network"]
    return state


def export_weights(checkpoint: str | os.PathLike, bundle: str | os.PathLike | None = None, torchscript: bool = True) -> Path:
    """Write ``models/model.pt`` (and ``model.ts``) of ``bundle`` from a training checkpoint.

    Args:
        checkpoint: ``best_model.pt`` of a training run (state dict of the 2D network), or a
            state dict of the whole bundle network.
        bundle: bundle folder (default: the shipped one).
        torchscript: also export ``models/model.ts``.
    """
    bundle = Path(bundle or DEFAULT_BUNDLE)
    net, _ = load_bundle_network(bundle, weights=False)
    state = _load_state(checkpoint)
    if not any(k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in state.items()}
    net.load_state_dict(state)
    out = bundle / "models" / "model.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".pt.part")
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, out)
    if torchscript:
        export_torchscript(bundle)
    return out


def export_torchscript(bundle: str | os.PathLike | None = None) -> Path:
    """``monai.bundle.ckpt_export``: ``models/model.pt`` -> ``models/model.ts`` (with the configs inside)."""
    from monai.bundle import ckpt_export

    bundle = Path(bundle or DEFAULT_BUNDLE).resolve()
    import sys

    if str(bundle) not in sys.path:
        sys.path.insert(1, str(bundle))
    cfg = bundle / "configs"
    ckpt_export(
        net_id="network_def",
        filepath=str(bundle / "models" / "model.ts"),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(cfg / "metadata.json"),
        config_file=str(cfg / "inference.json"),
        bundle_root=str(bundle),
    )
    return bundle / "models" / "model.ts"
