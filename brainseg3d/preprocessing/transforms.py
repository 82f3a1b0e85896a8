"""MONAI transform chains, defined once and shared by training, validation and inference.

The preprocessing chain (:func:`preprocessing`) is, in order::

    LoadImaged            four NIfTI files (stacked) or one 4D NIfTI, + label
    EnsureChannelFirstd   image -> [4, X, Y, Z] in the MODALITIES order, label -> [1, X, Y, Z]
    Orientationd          RAS
    Spacingd              1 mm isotropic (MONAI skips the resampling when the grid already is)
    CropForegroundd       brain = non-zero in any modality, plus a small margin
    NormalizeIntensityd   z-score over non-zero voxels, per channel (or ScaleIntensityd: min-max)
    LabelToRegionsd       label map -> nested regions [WT, TC, ET]

Every spatial step is invertible: ``chain.inverse(data)`` (or :class:`monai.transforms.Invertd`
on a prediction) brings a volume back to the input's exact shape and affine.

BraTS labels: 1 necrotic / non-enhancing core, 2 edema, enhancing tumour 4 (2018-2021) or 3
(2023+). Regions: WT = {1, 2, ET}, TC = {1, ET}, ET = {ET}.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.transforms import (
    CastToTyped,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    ScaleIntensityd,
    Spacingd,
)

from brainseg3d.core.components import LabelToRegions, LabelToRegionsd, RegionsToLabels, RegionsToLabelsd, brain_mask

__all__ = [
    "LabelToRegions",
    "LabelToRegionsd",
    "RegionsToLabels",
    "RegionsToLabelsd",
    "brain_mask",
    "preprocessing",
]



def preprocessing(
    keys: Sequence[str] = ("image", "label"),
    *,
    load: bool = True,
    channel_dim: int | str | None = None,
    normalize: str | None = "zscore",
    margin: int = 2,
    pixdim: Sequence[float] | None = (1.0, 1.0, 1.0),
    regions: bool = True,
    et_label: int | str = "auto",
) -> Compose:
    """The preprocessing chain shared by training, validation and inference.

    Args:
        keys: image key first, then the label key when the data has one.
        load: start with :class:`LoadImaged` (``False`` when the dict already holds arrays with
            MONAI metadata).
        channel_dim: where the modality channels are in a 4D file: ``None`` to follow the
            reader (four stacked files, channel-last 4D NIfTI), ``0`` for a channel-first file.
        normalize: ``"zscore"`` (non-zero voxels, per channel), ``"minmax"`` (per channel to
            [0, 1], as the seed project did) or ``None`` (left to the caller: the predictor
            runs the z-score on the GPU).
        margin: voxels kept around the brain's bounding box.
        pixdim: target spacing in mm; ``None`` keeps the input's spacing.
        regions: convert the label to ``[WT, TC, ET]``.
        et_label: passed to :class:`LabelToRegionsd`.

    Returns:
        An invertible :class:`monai.transforms.Compose`.
    """
    keys = list(keys)
    image, label = keys[0], keys[1:]
    modes = ["bilinear"] + ["nearest"] * len(label)
    chain: list = []
    if load:
        chain.append(LoadImaged(keys, image_only=True, allow_missing_keys=True))
    chain += [
        EnsureChannelFirstd(image, channel_dim=channel_dim),
        EnsureChannelFirstd(label, allow_missing_keys=True) if label else None,
        EnsureTyped(keys, dtype=torch.float32, allow_missing_keys=True, track_meta=True),
        Orientationd(keys, axcodes="RAS", labels=None, allow_missing_keys=True),
        Spacingd(keys, pixdim=pixdim, mode=modes, allow_missing_keys=True) if pixdim else None,
        CropForegroundd(keys, source_key=image, select_fn=brain_mask, margin=margin, allow_missing_keys=True),
    ]
    if normalize == "zscore":
        chain.append(NormalizeIntensityd(image, nonzero=True, channel_wise=True))
    elif normalize == "minmax":
        chain.append(ScaleIntensityd(image, minv=0.0, maxv=1.0, channel_wise=True))
    elif normalize is not None:
        raise ValueError(f"normalize must be 'zscore' or 'minmax', got {normalize!r}")
    if label and regions:
        chain.append(LabelToRegionsd(label, et_label=et_label, allow_missing_keys=True))
        chain.append(CastToTyped(label, dtype=torch.uint8, allow_missing_keys=True))
    return Compose([t for t in chain if t is not None])
