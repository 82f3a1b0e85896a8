"""Networks: the 2.5D wrapper, CPU bfloat16 autocast, and optional local encoder weights.

Architectures themselves come from MONAI and are chosen in the YAML config (``network:`` with a
``_target_``, as in model-zoo bundles), so an architecture is a config, not a code fork:

=====================  =============================================================
config                 network
=====================  =============================================================
configs/unet25d.yaml   ``monai.networks.nets.UNet`` (residual units), 2.5D
configs/basicunet25d   ``monai.networks.nets.BasicUNet``, 2.5D
configs/resnet34unet25d ``monai.networks.nets.FlexibleUNet`` (ResNet34 encoder), 2.5D
configs/swinunetr25d   ``monai.networks.nets.SwinUNETR`` (2D, CNN-transformer hybrid), 2.5D
configs/segresnet3d    ``monai.networks.nets.SegResNet`` on 3D patches (model-zoo recipe)
=====================  =============================================================
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from brainseg3d.core.components import SliceWise25D, neighbour_stack
from brainseg3d.core.training import Autocast, bf16_supported, load_initial_weights, widen_neighbour_channels

__all__ = ["SliceWise25D", "neighbour_stack", "Autocast", "bf16_supported", "load_encoder_weights", "load_initial_weights",
           "widen_neighbour_channels", "volume_network",
           "MemberLogits", "member_network", "flip_mean_probability"]

logger = logging.getLogger(__name__)


def load_encoder_weights(net: nn.Module, path: str | Path | None) -> nn.Module:
    """Load a local encoder checkpoint (e.g. ImageNet ResNet34) into a FlexibleUNet; no download.

    Keys that do not match in name and shape (the first conv when channels differ, the
    classifier) are skipped and listed in the log.
    """
    if not path:
        return net
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    target = net.encoder if hasattr(net, "encoder") else net
    own = target.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(keep))
    target.load_state_dict(keep, strict=False)
    logger.info("encoder weights from %s: %d tensors loaded, %d skipped %s", path, len(keep), len(skipped), skipped[:5])
    return net


def volume_network(net: nn.Module, mode: str, k: int = 1, bf16: bool = False, slice_batch: int = 32, divisible: int = 16,
                   views: str | list[str] = "axial") -> nn.Module:
    """A network that takes ``[B, 4, H, W, D]`` and returns ``[B, 3, H, W, D]`` logits.

    Args:
        net: the trained network (2D for ``mode="2.5d"``, 3D for ``mode="3d"``).
        mode: ``"2.5d"`` wraps ``net`` in :class:`SliceWise25D`; ``"3d"`` returns it as is
            (under autocast when ``bf16``).
        divisible: in-plane padding multiple the 2D network needs (32 for 5 down-samplings).
        views: the slices a 2.5D network reads (``"axial"``, ``"coronal"``, ``"sagittal"``), or
            several of them, whose probabilities are averaged.
    """
    if mode == "2.5d":
        return SliceWise25D(net, k=k, slice_batch=slice_batch, divisible=divisible, bf16=bf16, views=views)
    if mode == "3d":
        return Autocast(net, enabled=bf16)
    raise ValueError(f"mode must be '2.5d' or '3d', got {mode!r}")


#: the flips of flip test-time augmentation: identity and the two in-plane axes of [B, C, H, W, D]
FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (2, 3))


def flip_mean_probability(network: nn.Module, x: torch.Tensor, tta: bool = True) -> torch.Tensor:
    """Sigmoid probabilities of ``network(x)``, averaged over :data:`FLIPS` when ``tta``."""
    flips = FLIPS if tta else FLIPS[:1]
    prob = None
    for dims in flips:
        p = network(x.flip(dims) if dims else x).float().sigmoid_()  # the logits are not kept
        p = p.flip(dims) if dims else p
        prob = p if prob is None else prob.add_(p)
    return prob if len(flips) == 1 else prob.div_(len(flips))


class MemberLogits(nn.Module):
    """The members of an ensemble side by side: ``[B, M * C, ...]`` logits (member-major), for
    per-member probabilities (quality estimate) in the same pass that makes their mean."""

    def __init__(self, nets):
        super().__init__()
        self.nets = nets if isinstance(nets, nn.ModuleList) else nn.ModuleList(list(nets))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(x).float() for net in self.nets], 1)


def member_network(network: nn.Module) -> tuple[nn.Module, int]:
    """The bundle network (a :class:`SliceWise25D` around an ensemble's ``ProbabilityMean``,
    or around one network) made to return every member's logits; and the number of members.

    The weights are shared with ``network`` (nothing is copied)."""
    inner = network.net
    nets = inner.nets if type(inner).__name__ == "ProbabilityMean" else nn.ModuleList([inner])
    wrapped = SliceWise25D(MemberLogits(nets), k=network.k, slice_batch=network.slice_batch, divisible=network.divisible,
                           bf16=network.bf16, mask_background=network.mask_background, views=network.views)
    return wrapped.eval(), len(nets)
