"""Self-contained pieces the MONAI bundle needs: torch + MONAI only, no brainseg3d import.

This file is the single source of these classes. The bundle carries a verbatim copy at
``bundles/brats_mri_2p5d_segmentation/scripts/components.py`` so that the bundle runs with MONAI
alone (MONAI Label, ``python -m monai.bundle run``); ``tests/test_bundle.py`` fails when the
two drift apart.

- :func:`neighbour_stack`: axial slices with K neighbours stacked as channels (the 2.5D input).
- :class:`SliceWise25D`: wraps a 2D network so it takes ``[B, C, H, W, D]`` and returns
  ``[B, 3, H, W, D]``: to every client it is an ordinary 3D segmentation network. It slices
  one view (axial by default, or coronal / sagittal: :data:`~.labels.VIEWS`) or several, and
  then averages their probabilities (a multi-view ensemble of the same weights).
- :class:`LabelToRegionsd` / :class:`RegionsToLabelsd`: BraTS labels <-> nested [WT, TC, ET].
- :class:`ProbabilityMean`: an ensemble of networks as one network (mean of the sigmoids).
- :class:`PostprocessRegionsd`: small-component removal (absolute and relative to the largest), the tumour-core
  hole filling and the small-ET-to-necrosis rule (scipy, imported when a rule is on).
"""

from __future__ import annotations

from typing import Hashable, List, Mapping, Optional, Sequence, Union

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from torch import nn

from .labels import LABEL_SCHEMES, VIEWS, as_views

__all__ = [
    "neighbour_stack",
    "z_major_stack",
    "SliceWise25D",
    "ProbabilityMean",
    "PostprocessRegions",
    "PostprocessRegionsd",
    "fill_plane_holes",
    "LabelToRegions",
    "LabelToRegionsd",
    "RegionsToLabels",
    "RegionsToLabelsd",
    "brain_mask",
]


def neighbour_stack(volume: torch.Tensor, k: int, z_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Stack axial neighbours as channels.

    Args:
        volume: ``[C, X, Y, Z]``.
        k: neighbours on each side.
        z_index: 1D tensor of the slices to return, ``None`` for all.

    Returns:
        ``[N, C * (2k + 1), X, Y]`` for N requested slices (neighbour-major channel order).
    """
    c, x, y, z = volume.shape
    zs = torch.arange(z, device=volume.device) if z_index is None else z_index.reshape(-1).to(volume.device)
    offsets = torch.arange(-k, k + 1, device=volume.device)
    idx = (zs[:, None] + offsets[None, :]).clamp_(0, z - 1)  # replication padding at the edges
    n = zs.shape[0]
    if n * (2 * k + 1) < z:
        # a few slices (training): gather them along Z, then move Z to the front
        # [C, X, Y, N * (2k+1)] -> [C, X, Y, N, 2k+1] -> [N, 2k+1, C, X, Y]
        out = volume.index_select(3, idx.reshape(-1)).reshape(c, x, y, n, 2 * k + 1).permute(3, 4, 0, 1, 2)
        return out.reshape(n, c * (2 * k + 1), x, y)
    # the whole volume (inference): move Z to the front once, then copy whole slices, which
    # is contiguous (3x faster on CPU than gathering along the innermost axis and permuting)
    return z_major_stack(volume.permute(3, 0, 1, 2).contiguous(), k, zs)


def z_major_stack(by_z: torch.Tensor, k: int, zs: torch.Tensor) -> torch.Tensor:
    """:func:`neighbour_stack` of slices ``zs`` from a Z-first volume ``[Z, C, X, Y]``."""
    z, c, x, y = by_z.shape
    offsets = torch.arange(-k, k + 1, device=by_z.device)
    idx = (zs.reshape(-1)[:, None] + offsets[None, :]).clamp_(0, z - 1)
    return by_z.index_select(0, idx.reshape(-1)).reshape(zs.numel(), (2 * k + 1) * c, x, y)


class SliceWise25D(nn.Module):
    """Run a 2D network over every slice of one view (with K neighbours as channels) of a 3D volume.

    Args:
        net: 2D network taking ``in_channels * (2k + 1)`` channels.
        k: neighbours on each side.
        slice_batch: slices per forward pass of the 2D network.
        divisible: in-plane size is padded (with zeros, the normalized background) to a
            multiple of this, then cropped back.
        bf16: run the 2D network under CPU/CUDA bfloat16 autocast (output stays float32).
        mask_background: set the logits of voxels outside the brain (zero in every input
            channel, as z-score normalization over the brain leaves them) to -20, so no
            tumour is ever predicted outside the brain.
        views: the slices the network reads, ``"axial"`` (along the last spatial axis, Z of a
            RAS volume), ``"coronal"`` (Y) or ``"sagittal"`` (X) (:data:`~.labels.VIEWS`), or a
            list of them: the volume is turned so that each view's axis comes last, the output
            turned back; with several views the output is the logit of the mean of their
            sigmoids, as :class:`ProbabilityMean` does for several networks.

    Inputs ``[B, C, H, W, D]`` -> logits ``[B, out_channels, H, W, D]``.

    Example:
        >>> from monai.networks.nets import UNet
        >>> net = SliceWise25D(UNet(2, 12, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2)), k=1)
        >>> net(torch.zeros(1, 4, 100, 120, 30)).shape
        torch.Size([1, 3, 100, 120, 30])
    """

    def __init__(
        self,
        net: nn.Module,
        k: int = 1,
        slice_batch: int = 32,
        divisible: int = 16,
        bf16: bool = False,
        mask_background: bool = True,
        views: Union[str, Sequence[str]] = "axial",
    ):
        super().__init__()
        views = as_views(views)
        self.views = views
        self.dims: List[int] = [2 + VIEWS[v] for v in views]  # the sliced axes of [B, C, H, W, D]
        self.mask_background = bool(mask_background)
        self.net = net
        self.k = int(k)
        self.slice_batch = int(slice_batch)
        self.divisible = int(divisible)
        # "false" / "true" strings arrive from `monai.bundle run --bf16 false`
        self.bf16 = bf16.strip().lower() in ("1", "true", "yes") if isinstance(bf16, str) else bool(bf16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bf16 and not torch.jit.is_scripting():
            return self._forward_autocast(x)
        return self._forward(x)

    @torch.jit.unused
    def _forward_autocast(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            return self._forward(x).float()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.dims) == 1:
            return self._view(x, self.dims[0]).contiguous()
        # the views' sigmoids summed in place into the first view's buffer (no per-view copies kept)
        total = self._view(x, self.dims[0]).float().sigmoid_().contiguous()
        for dim in self.dims[1:]:
            total.add_(self._view(x, dim).float().sigmoid_())
        return total.div_(float(len(self.dims))).logit_(eps=1e-6)

    def _view(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Logits of the slices along axis ``dim`` of ``x`` (laid out as ``x``; a strided view
        of the output for a view other than axial)."""
        if dim != 4:  # its axis last, then back
            return self._slices(x.movedim(dim, 4)).movedim(4, dim)
        return self._slices(x)

    def _slices(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w, d = x.shape
        ph = (self.divisible - h % self.divisible) % self.divisible
        pw = (self.divisible - w % self.divisible) % self.divisible
        top, left = ph // 2, pw // 2
        padded = x
        if ph > 0 or pw > 0:
            padded = nn.functional.pad(x, [0, 0, left, pw - left, top, ph - top])
        # each pass writes its slices, unpadded, straight into the one output tensor
        y = torch.empty(0, device=x.device)
        for i in range(b):
            # Z first once; each pass then copies only its own slices and neighbours (contiguous),
            # so the full [D, C * (2k + 1), H', W'] stack never exists at once
            by_z = padded[i].permute(3, 0, 1, 2).contiguous()  # [D, C, H', W']
            for s in range(0, d, self.slice_batch):
                e = min(s + self.slice_batch, d)
                zs = torch.arange(s, e, device=x.device)
                out = self.net(z_major_stack(by_z, self.k, zs))  # [n, out, H', W']
                if y.numel() == 0:
                    y = torch.empty((b, out.shape[1], h, w, d), dtype=out.dtype, device=x.device)
                y[i, :, :, :, s:e] = out[:, :, top : top + h, left : left + w].permute(1, 2, 3, 0)
        if self.mask_background:
            y.masked_fill_(~(x != 0).any(1, keepdim=True), -20.0)
        return y


def brain_mask(x):
    """Foreground selector for :class:`CropForegroundd`: non-zero in any modality."""
    return x != 0


class LabelToRegions(Transform):
    """BraTS label map -> three nested binary regions ``[WT, TC, ET]``.

    Args:
        et_label: value of the enhancing tumour: 4 (BraTS 2018-2021), 3 (BraTS 2023+) or
            ``"auto"`` (4 if present, else 3).
        case_id: used in error messages.

    Raises:
        ValueError: the label map holds values other than 0, 1, 2 and the ET value, or both
            3 and 4 with ``et_label="auto"``.
    """

    def __init__(self, et_label: int | str = "auto") -> None:
        if et_label not in (*LABEL_SCHEMES.values(), "auto"):
            raise ValueError(f"et_label must be 3, 4 or 'auto', got {et_label!r}")
        self.et_label = et_label

    def __call__(self, label, case_id: str = "label"):
        lab = label[0] if label.ndim == 4 else label
        if not isinstance(lab, torch.Tensor) and getattr(lab, "dtype", None) is not None and lab.dtype.kind == "u" and lab.dtype.itemsize > 1:
            lab = lab.astype("int64")  # numpy uint16/32/64 (some BraTS 2021 files): torch has no unique for them
        lab = torch.as_tensor(lab)
        if lab.dtype in (torch.uint16, torch.uint32, torch.uint64):
            lab = lab.to(torch.int64)
        values = set(torch.unique(lab).round().int().tolist())
        et = self.et_label
        if et == "auto":
            if {3, 4} <= values:
                raise ValueError(f"{case_id}: label map holds both 3 and 4; cannot tell which is ET")
            et = 3 if 3 in values else 4
        unknown = values - {0, 1, 2, et}
        if unknown:
            raise ValueError(
                f"{case_id}: unknown label values {sorted(unknown)} (expected 0, 1, 2, {et})"
            )
        wt = lab > 0
        tc = (lab == 1) | (lab == et)
        etm = lab == et
        return torch.stack([torch.as_tensor(m) for m in (wt, tc, etm)]).to(torch.uint8)


class LabelToRegionsd(MapTransform):
    """Dictionary version of :class:`LabelToRegions`; keeps MetaTensor metadata and inverts."""

    def __init__(self, keys: KeysCollection, et_label: int | str = "auto", allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelToRegions(et_label)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            case_id = str(d.get("case", key))
            out = self.converter(d[key], case_id)
            if isinstance(d[key], MetaTensor):
                out = MetaTensor(out, meta=d[key].meta, applied_operations=d[key].applied_operations)
            d[key] = out
        return d

    def inverse(self, data):  # regions are not turned back into labels by the chain's inverse
        return dict(data)


class RegionsToLabels(Transform):
    """Binary nested regions ``[WT, TC, ET, ...]`` -> one BraTS label map ``[1, ...]``.

    Assigned in the order WT -> 2, TC -> 1, ET -> ET value, so the result is nested by
    construction (every ET voxel is TC, every TC voxel is WT).

    Args:
        et_label: 4 for BraTS 2018-2021 labels, 3 for BraTS 2023+.
        dtype: output dtype; ``uint8`` because ITK and NIfTI viewers cannot take int64 masks.
    """

    def __init__(self, et_label: int = 4, dtype=torch.uint8) -> None:
        self.et_label = int(et_label)
        self.dtype = dtype

    def __call__(self, regions):
        r = torch.as_tensor(regions) > 0.5
        zero = torch.zeros((), dtype=self.dtype, device=r.device)
        # ET over TC over WT (one pass per region, no boolean-indexed writes)
        out = torch.where(r[0], zero + 2, zero)
        out = torch.where(r[1], zero + 1, out)
        out = torch.where(r[2], zero + self.et_label, out)[None]
        if isinstance(regions, MetaTensor):
            out = MetaTensor(out, meta=regions.meta, applied_operations=regions.applied_operations)
        return out


class RegionsToLabelsd(MapTransform):
    """Dictionary version of :class:`RegionsToLabels`."""

    def __init__(self, keys: KeysCollection, et_label: int = 4, allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.converter = RegionsToLabels(et_label)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d




class ProbabilityMean(nn.Module):
    """Several networks as one: the logit of the mean of their sigmoid outputs.

    An ensemble (e.g. the cross-validation fold models) that every client of a single network
    can use unchanged: ``sigmoid(ProbabilityMean(nets)(x))`` is the mean of
    ``sigmoid(net(x))`` over the members. TorchScript-compatible.

    Args:
        nets: the member networks (same input and output shapes).
    """

    def __init__(self, nets):
        super().__init__()
        self.nets = nn.ModuleList(list(nets))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        for net in self.nets:
            total = total + torch.sigmoid(net(x).float())
        return torch.logit(total / len(self.nets), eps=1e-6)


def small_components(sizes, min_component: int = 0, min_fraction: float = 0.0):
    """Which components are removed: ``sizes`` are voxel counts by component label (index 0,
    the background, is never removed); a component goes when it is smaller than
    ``min_component`` voxels or than ``min_fraction`` of the largest component."""
    import numpy as np

    sizes = np.asarray(sizes).copy()
    sizes[0] = 0
    small = sizes < max(min_component, min_fraction * sizes.max(initial=0))
    small[0] = False
    return small


def fill_plane_holes(mask):
    """Fill the holes of a boolean ``[X, Y, Z]`` (or ``[X, Y]``) numpy mask slice by slice, in the
    slices of every axis: a voxel is filled when, in at least one of the three slices through it,
    it is enclosed by the mask (4-connected background that does not reach the slice's edge).
    Slice-wise rather than 3D because a tumour core is a shell open at its poles, whose enclosed
    necrosis a 3D fill (``monai.transforms.FillHoles``) does not reach.

    Computed in the mask's bounding box with a one-voxel margin (the same result: outside the box
    every slice's background is one region that reaches the edge).
    """
    import numpy as np
    from scipy import ndimage

    if not mask.any():
        return mask.copy()
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(mask))
    sub = np.pad(mask[box], 1)  # open background all round, as the volume's edge is to scipy
    filled = sub.copy()
    if mask.ndim == 2:
        filled |= ndimage.binary_fill_holes(sub)
    else:
        for axis in range(mask.ndim):  # 4-connected background within the slices normal to `axis`
            structure = np.zeros((3,) * mask.ndim, bool)
            index = [slice(None)] * mask.ndim
            index[axis] = 1
            structure[tuple(index)] = ndimage.generate_binary_structure(mask.ndim - 1, 1)
            filled |= ndimage.binary_fill_holes(sub, structure=structure)
    out = mask.copy()
    out[box] = filled[(slice(1, -1),) * mask.ndim]
    return out


class PostprocessRegions(Transform):
    """Post-processing of region probabilities (or binary regions) ``[WT, TC, ET, ...spatial]``,
    chosen by cross-validation on the out-of-fold predictions.

    Args:
        thresholds: per-region probability thresholds (WT, TC, ET); a region is
            ``probability > threshold`` (binary input passes through unchanged for any
            threshold in (0, 1)).
        min_component: whole-tumour connected components (full connectivity) smaller than
            this many voxels are removed from every region (0: off).
        min_fraction: whole-tumour components smaller than this fraction of the largest one are
            removed too (0: off; 1 keeps the largest only): false positives far from the tumour
            are usually much smaller than it, whatever the voxel size.
        et_to_necrosis: when the predicted enhancing tumour has fewer voxels than this, the ET
            channel is cleared; those voxels stay tumour core, i.e. become necrosis (0: off).
        fill_core_holes: whole-tumour voxels that the tumour core (TC or ET) encloses in a slice
            of any axis (:func:`fill_plane_holes`) join the tumour core, i.e. edema inside an
            enhancing rim becomes necrosis (first, on the thresholded regions; WT and ET unchanged).
    """

    def __init__(self, min_component: int = 0, et_to_necrosis: int = 0, thresholds=(0.5, 0.5, 0.5), min_fraction: float = 0.0,
                 fill_core_holes: bool = False) -> None:
        self.fill_core_holes = bool(fill_core_holes)
        self.min_component = int(min_component)
        self.et_to_necrosis = int(et_to_necrosis)
        self.min_fraction = float(min_fraction)
        if not 0.0 <= self.min_fraction <= 1.0:
            raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction!r}")
        self.thresholds = [float(t) for t in thresholds]
        if len(self.thresholds) != 3 or not all(0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be three numbers in (0, 1) for WT, TC, ET, got {thresholds!r}")

    def __call__(self, regions):
        x = torch.as_tensor(regions)
        t = torch.tensor(self.thresholds, dtype=torch.float32, device=x.device).reshape(3, *([1] * (x.ndim - 1)))
        r = torch.cat([x[:3].float() > t, x[3:] > 0.5])
        if self.fill_core_holes:  # before the component rules: it changes no whole-tumour voxel
            tc = (r[1] | r[2]).cpu().numpy()
            holes = fill_plane_holes(tc) & ~tc & r[0].cpu().numpy()  # enclosed whole tumour outside the core
            if holes.any():
                r[1] |= torch.from_numpy(holes).to(r.device)
        if self.min_component > 0 or self.min_fraction > 0:
            import numpy as np
            from scipy import ndimage

            wt = r[0].cpu().numpy()
            lab, n = ndimage.label(wt, structure=np.ones((3,) * wt.ndim, bool))
            if n:
                small = small_components(np.bincount(lab.ravel()), self.min_component, self.min_fraction)
                r = r & ~torch.from_numpy(small[lab]).to(r.device)[None]
        if self.et_to_necrosis > 0:
            n_et = int(r[2].sum())
            if 0 < n_et < self.et_to_necrosis:
                r = torch.cat([r[:2], torch.zeros_like(r[2:3]), r[3:]])
        out = r.to(x.dtype)
        if isinstance(regions, MetaTensor):
            out = MetaTensor(out, meta=regions.meta, applied_operations=regions.applied_operations)
        return out


class PostprocessRegionsd(MapTransform):
    """Dictionary version of :class:`PostprocessRegions`."""

    def __init__(self, keys: KeysCollection, min_component: int = 0, et_to_necrosis: int = 0, thresholds=(0.5, 0.5, 0.5),
                 min_fraction: float = 0.0, fill_core_holes: bool = False, allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.converter = PostprocessRegions(min_component, et_to_necrosis, thresholds, min_fraction, fill_core_holes)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
