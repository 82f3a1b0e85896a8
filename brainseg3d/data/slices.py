"""2.5D slice data: axial slices with K neighbours on each side stacked as channels.

For a preprocessed image ``[C, X, Y, Z]`` (C = 4 modalities, RAS, so Z is axial) the 2.5D
input of slice z is ``[C * (2K + 1), X, Y]`` ordered neighbour-major::

    [z-K: t1 t1ce t2 flair, ..., z: t1 t1ce t2 flair, ..., z+K: t1 t1ce t2 flair]

Edge slices repeat the first/last slice (replication padding). K = 0 is plain 2D. The same
layout is built at inference time by :class:`brainseg3d.networks.SliceWise25D`, through the
one function :func:`neighbour_stack`.

Example:
    >>> from brainseg3d.data.slices import VolumeCache, SliceDataset
    >>> cache = VolumeCache(items, transform)           # preprocesses each volume once
    >>> ds = SliceDataset(cache, k=1, tumour_ratio=0.7)  # ~70 % of slices show tumour
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from tqdm import tqdm

from brainseg3d.core.components import neighbour_stack
from brainseg3d.core.training import SliceDataset  # the one definition (the bundle's train.json samples slices too)

__all__ = ["neighbour_stack", "VolumeCache", "SliceDataset"]


class VolumeCache:
    """Preprocess each volume once and keep it in memory (image float32 / bfloat16, label uint8).

    Args:
        items: datalist items ``{"case", "image", "label"}``.
        transform: the preprocessing chain (:func:`brainseg3d.preprocessing.transforms.preprocessing`).
        progress: show a progress bar on stderr.
        dtype: storage dtype of images (float16 halves the memory of a large training set).
    """

    def __init__(self, items: Sequence[dict], transform: Callable, progress: bool = True, dtype=torch.float32):
        self.items = list(items)
        self.images: list[torch.Tensor] = []
        self.labels: list[torch.Tensor | None] = []
        for it in tqdm(self.items, desc="preprocess", disable=not progress, file=None):
            d = transform({k: v for k, v in it.items() if k in ("image", "label", "case")})
            self.images.append(torch.as_tensor(d["image"]).to(dtype).contiguous())
            lab = d.get("label")
            self.labels.append(None if lab is None else torch.as_tensor(lab).to(torch.uint8).contiguous())

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, v: int) -> dict:
        """``{"image", "label"}`` of volume ``v`` (the layout :class:`SliceDataset` reads)."""
        return {"image": self.images[v], "label": self.labels[v]}
