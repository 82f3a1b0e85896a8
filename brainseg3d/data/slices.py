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

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from brainseg3d.core.components import neighbour_stack

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


class SliceDataset(Dataset):
    """Axial 2.5D slices of cached volumes, with a set share of slices that show tumour.

    Slices without brain are skipped. Each epoch draws all tumour slices and enough
    tumour-free slices that tumour slices make up ``tumour_ratio`` of the epoch (all
    tumour-free slices when there are too few tumour slices); call :meth:`resample` at the
    start of each epoch to draw anew.

    Args:
        cache: the preprocessed volumes.
        k: neighbours on each side (channels = 4 * (2k + 1)).
        tumour_ratio: share of tumour slices per epoch, in (0, 1]; ``None`` keeps every slice.
        transform: 2D dictionary transform applied to ``{"image", "label"}`` (augmentation).
        seed: base seed of the tumour-free slice draw.
    """

    def __init__(
        self,
        cache: VolumeCache,
        k: int = 1,
        tumour_ratio: float | None = 0.7,
        transform: Callable | None = None,
        seed: int = 0,
    ):
        self.cache, self.k, self.tumour_ratio, self.transform, self.seed = cache, k, tumour_ratio, transform, seed
        self.tumour: list[tuple[int, int]] = []
        self.background: list[tuple[int, int]] = []
        for v, (img, lab) in enumerate(zip(cache.images, cache.labels)):
            brain = (img != 0).any(0).any(0).any(0)
            tum = lab[0].any(0).any(0) if lab is not None else torch.zeros_like(brain)
            for z in torch.nonzero(brain).flatten().tolist():
                (self.tumour if tum[z] else self.background).append((v, z))
        self.index: list[tuple[int, int]] = []
        self.resample(0)

    def resample(self, epoch: int = 0) -> None:
        """Draw the slices of an epoch (deterministic for ``seed`` and ``epoch``)."""
        if self.tumour_ratio is None or not self.tumour:
            self.index = self.tumour + self.background
            return
        n_bg = int(round(len(self.tumour) * (1 - self.tumour_ratio) / self.tumour_ratio))
        rng = np.random.default_rng(self.seed + epoch)
        pick = rng.choice(len(self.background), size=min(n_bg, len(self.background)), replace=False)
        self.index = self.tumour + [self.background[i] for i in sorted(pick)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        v, z = self.index[i]
        img = neighbour_stack(self.cache.images[v], self.k, torch.tensor([z]))[0].float()
        lab = self.cache.labels[v]
        d = {"image": img}
        if lab is not None:
            d["label"] = lab[..., z].float()
        if self.transform is not None:
            d = self.transform(d)
        return d
