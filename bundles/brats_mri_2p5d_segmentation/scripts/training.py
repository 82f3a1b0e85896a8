"""What training needs beyond the inference components: torch + MONAI + numpy only.

The package's trainer (:mod:`brainseg3d.training.trainer`) and the bundle's ``configs/train.json``
both train with these, so the bundle trains by the recipe that made its weights. The bundle
carries a verbatim copy at ``scripts/training.py`` (``brainseg3d bundle sync``).

- :func:`load_pool` / :func:`fold_items`: the items of a pool datalist (several data roots,
  a ``fold`` per item, MONAI Auto3DSeg's cross-validation layout) with absolute paths.
- :class:`SliceDataset`: the 2.5D training slices of preprocessed volumes, with a set share of
  slices that show tumour, drawn anew each epoch.
- :class:`SliceResampler`: the Ignite handler that draws a :class:`SliceDataset`'s slices at
  the start of every epoch.
- :class:`DiceBCELoss`: sigmoid Dice + binary cross-entropy over the region channels (nnU-Net's
  region loss; batch Dice, per-slice Dice or a mix).
- :class:`Autocast`: a network run under bfloat16 autocast on any device (MONAI's ``amp`` is
  CUDA float16).
- :func:`bf16_supported`: whether bfloat16 autocast is fast on a device.
- :func:`save_weights`: a network's final weights, atomically, from rank 0 only.
- :func:`assemble_ensemble`: the fold members' weights as the bundle's ensemble ``model.pt``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .components import neighbour_stack
from .labels import VIEWS, as_views

logger = logging.getLogger(__name__)

__all__ = ["absolute_item", "load_pool", "fold_items", "SliceDataset", "SliceResampler", "DiceBCELoss", "Autocast", "bf16_supported", "save_weights",
           "load_member", "assemble_ensemble",
           "widen_neighbour_channels", "load_initial_weights"]


def absolute_item(item: dict, base) -> dict:
    """A datalist item with its ``image`` and ``label`` paths joined to ``base``."""
    base = Path(base)
    it = dict(item)
    it["image"] = [str(base / p) for p in item["image"]]
    if "label" in item:
        it["label"] = str(base / item["label"])
    return it


def load_pool(path, roots: Optional[Mapping[str, object]] = None) -> list:
    """Every item of a pool datalist with absolute paths.

    Args:
        path: the pool datalist (``{"roots": {name: folder}, "training": [{"root": name,
            "fold": i, "image": [...], "label": ...}]}``; roots relative to the file's folder).
        roots: root name -> folder, replacing the recorded ones (the rest keep theirs). A plain
            datalist with ``dataset_dir`` and no ``root`` keys is read too.

    Raises:
        FileNotFoundError: a root does not exist (naming it and how to point elsewhere).
        KeyError: an item names a root the file does not record.
    """
    path = Path(path)
    doc = json.loads(path.read_text())
    recorded = dict(doc.get("roots") or {"": doc.get("dataset_dir", ".")})
    where = {n: Path(r) if Path(r).is_absolute() else path.parent / r for n, r in recorded.items()}
    where.update({n: Path(r) for n, r in (roots or {}).items()})
    out = []
    for item in doc["training"]:
        name = item.get("root", "")
        if name not in where:
            raise KeyError(f"{item['case']}: root {name!r} is not in {path} (roots: {sorted(where)})")
        base = where[name]
        if not base.is_dir():
            raise FileNotFoundError(f"root {name!r} of {path} not found at {base}; pass --root {name}=PATH")
        out.append(absolute_item(item, base))
    return out


def fold_items(path, fold: int, roots: Optional[Mapping[str, object]] = None, held_out: Optional[bool] = None):
    """The items of one fold of a pool datalist.

    Args:
        path: the pool datalist.
        fold: the held-out fold.
        roots: as in :func:`load_pool`.
        held_out: ``None`` returns ``(training, held_out)``; ``False`` only the training items
            (the other folds), ``True`` only the held-out ones (a bundle config takes one list).
    """
    items = load_pool(path, roots)
    folds = sorted({it["fold"] for it in items})
    if int(fold) not in folds:
        raise ValueError(f"fold {fold} is not in {path} (folds {folds})")
    train = [it for it in items if it["fold"] != int(fold)]
    held = [it for it in items if it["fold"] == int(fold)]
    return (train, held) if held_out is None else (held if held_out else train)


class SliceDataset(Dataset):
    """2.5D slices (axial by default) of preprocessed volumes, with a set share of slices that show tumour.

    Slices without brain are skipped. Each epoch draws all tumour slices and enough
    tumour-free slices that tumour slices make up ``tumour_ratio`` of the epoch (all
    tumour-free slices when there are too few tumour slices); call :meth:`resample` at the
    start of each epoch to draw anew (the trainer and the bundle's train.json do).

    Args:
        volumes: a sequence of ``{"image": [C, X, Y, Z], "label": [3, X, Y, Z]}`` (RAS, so Z is
            axial), e.g. a MONAI ``CacheDataset`` of the preprocessing chain (``copy_cache=False``:
            slices only read the volumes) or the trainer's ``VolumeCache``.
        k: neighbours on each side (channels = C * (2k + 1)).
        tumour_ratio: share of tumour slices per epoch, in (0, 1]; ``None`` keeps every slice.
        transform: 2D dictionary transform applied to ``{"image", "label"}`` (augmentation).
        seed: base seed of the tumour-free slice draw.
        views: the slices drawn: ``"axial"`` (along Z), ``"coronal"`` (Y) or ``"sagittal"`` (X),
            neighbours along the same axis (:data:`~.labels.VIEWS`; what
            :class:`~.components.SliceWise25D` reads with the same ``views``), or a list of
            them: the slices of every listed view (one network for all views).
        case_balance: draw the same number of tumour slices from every case with tumour (with
            replacement where a case has fewer), as nnU-Net samples cases uniformly, instead of
            every tumour slice once (where a large tumour gives many more slices than a small
            one). The epoch keeps its length.
        sources: the source of each volume (e.g. ``"adult"``, ``"africa"``: the datalist's
            ``source``), read with ``source_weights``.
        source_weights: source -> weight of its cases' tumour slices in the epoch's draw (a
            source missing from it weighs 1). Each case's share of the tumour slices (its own
            count, or an equal share with ``case_balance``) is multiplied by its source's weight,
            and the shares are scaled back to the epoch's number of tumour slices: ``{"adult":
            2}`` draws an adult case's slices twice as often as before against the others (with
            replacement where a case has fewer). The epoch keeps its length.
    """

    def __init__(self, volumes: Sequence[dict], k: int = 1, tumour_ratio: Optional[float] = 0.7, transform=None, seed: int = 0,
                 views: str | Sequence[str] = "axial", case_balance: bool = False, sources: Optional[Sequence[str]] = None,
                 source_weights: Optional[dict] = None):
        views = as_views(views)
        self.volumes, self.k, self.tumour_ratio, self.transform, self.seed = volumes, int(k), tumour_ratio, transform, int(seed)
        self.views, self.case_balance = views, bool(case_balance)
        self.source_weights = {str(s): float(w) for s, w in (source_weights or {}).items()}
        if any(w < 0 for w in self.source_weights.values()):
            raise ValueError(f"source_weights must not be negative, got {self.source_weights}")
        if self.source_weights and (sources is None or len(sources) != len(volumes)):
            raise ValueError("source_weights needs the source of every volume (sources)")
        unknown = set(self.source_weights) - set(sources or [])
        if unknown:
            raise ValueError(f"source_weights names sources no volume has: {sorted(unknown)} (the volumes' sources: {sorted(set(sources or []))})")
        self.sources = list(sources) if sources is not None else None
        self.tumour: list = []  # (volume, sliced axis of [C, X, Y, Z], slice)
        self.background: list = []
        for v in range(len(volumes)):
            d = volumes[v]
            for dim in (1 + VIEWS[name] for name in views):
                img, lab = self._turn(d["image"], dim), d.get("label")
                brain = (img != 0).any(0).any(0).any(0)
                tum = self._turn(lab, dim)[0].any(0).any(0) if lab is not None else torch.zeros_like(brain)
                for z in torch.nonzero(brain).flatten().tolist():
                    (self.tumour if tum[z] else self.background).append((v, dim, z))
        self.index: list = []
        self.resample(0)

    @staticmethod
    def _turn(volume, dim: int) -> torch.Tensor:
        """``[C, X, Y, Z]`` with axis ``dim`` last (a view of the tensor, no copy)."""
        volume = torch.as_tensor(volume)
        return volume if dim == 3 else volume.movedim(dim, 3)

    def resample(self, epoch: int = 0) -> None:
        """Draw the slices of an epoch (deterministic for ``seed`` and ``epoch``)."""
        rng = np.random.default_rng(self.seed + int(epoch))
        tumour = self._balanced_tumour(rng) if self.case_balance or self.source_weights else self.tumour
        if self.tumour_ratio is None or not self.tumour:
            self.index = tumour + self.background
            return
        n_bg = int(round(len(self.tumour) * (1 - self.tumour_ratio) / self.tumour_ratio))
        pick = rng.choice(len(self.background), size=min(n_bg, len(self.background)), replace=False)
        self.index = tumour + [self.background[i] for i in sorted(pick)]

    def _balanced_tumour(self, rng: np.random.Generator) -> list:
        """As many tumour slices as there are, drawn from each case with tumour in proportion to
        its share: the same for every case (``case_balance``) or its own count, times its
        source's weight."""
        by_case: dict = {}
        for entry in self.tumour:
            by_case.setdefault(entry[0], []).append(entry)
        if not by_case:
            return []
        total = len(self.tumour)
        share = {v: (total / len(by_case) if self.case_balance else len(own)) * self.source_weights.get(self.sources[v] if self.sources else "", 1.0)
                 for v, own in by_case.items()}
        scale = total / sum(share.values()) if sum(share.values()) > 0 else 0.0
        drawn = []
        for v in sorted(by_case):
            own, n = by_case[v], int(round(share[v] * scale))
            pick = rng.choice(len(own), size=n, replace=len(own) < n)
            drawn += [own[i] for i in sorted(pick)]
        return drawn

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        v, dim, z = self.index[i]
        vol = self.volumes[v]
        img = neighbour_stack(self._turn(vol["image"], dim), self.k, torch.tensor([z]))[0].float()
        d = {"image": img.as_tensor() if hasattr(img, "as_tensor") else img}
        lab = vol.get("label")
        if lab is not None:
            lab = self._turn(lab, dim)[..., z].float()
            d["label"] = lab.as_tensor() if hasattr(lab, "as_tensor") else lab
        if self.transform is not None:
            d = self.transform(d)
        return d


class SliceResampler:
    """Ignite handler: a new draw of a :class:`SliceDataset`'s slices at every epoch start
    (seeded by the epoch, so every rank of a distributed run draws the same).

    Args:
        dataset: the training :class:`SliceDataset`.
    """

    def __init__(self, dataset: SliceDataset):
        self.dataset = dataset

    def attach(self, engine) -> None:
        from monai.utils import optional_import

        events, _ = optional_import("ignite.engine", name="Events")
        engine.add_event_handler(events.EPOCH_STARTED, self)

    def __call__(self, engine) -> None:
        self.dataset.resample(engine.state.epoch)


class DiceBCELoss(nn.Module):
    """Sigmoid Dice + binary cross-entropy over overlapping region channels (WT, TC, ET): nnU-Net's
    region-based loss (``DC_and_BCE_loss``), with a choice of batch or per-slice Dice.

    ``loss = lambda_bce * BCE + lambda_dice * (batch_weight * Dice_batch + (1 - batch_weight) * Dice_slice)``

    Why not MONAI's :class:`~monai.losses.DiceCELoss` with ``sigmoid=True``: for an input of more
    than one channel its cross-entropy term is ``torch.nn.CrossEntropyLoss``, a *softmax* over the
    channels, whatever ``sigmoid`` says. With region targets a background voxel (``[0, 0, 0]``)
    then adds nothing to it, so stray tumour outside the tumour is left to the Dice term alone,
    and an ET voxel (``[1, 1, 1]``) asks for three equal logits. Binary cross-entropy scores each
    region channel on its own, as the sigmoid outputs are read.

    Batch Dice (nnU-Net's for 2D) is taken over the whole batch of slices: a slice without tumour
    core does not score a full Dice loss for a few stray voxels, but a small tumour then counts for
    little; the per-slice term keeps it in view.

    Args:
        batch_weight: share of the batch Dice in the Dice term, in [0, 1] (1: batch Dice only).
        lambda_dice: weight of the Dice term.
        lambda_bce: weight of the binary cross-entropy.
        smooth_nr: added to the Dice numerator (:class:`~monai.losses.DiceLoss`).
        smooth_dr: added to the Dice denominator.
        region_weights: one weight per region channel (e.g. ``[1, 1, 2]`` to weigh ET twice),
            scaled to a mean of 1 so the loss keeps its size; applied to both terms (the Dice of
            each channel and its cross-entropy). ``None``: equal weights.
    """

    def __init__(self, batch_weight: float = 1.0, lambda_dice: float = 1.0, lambda_bce: float = 1.0,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, region_weights=None):
        super().__init__()
        from monai.losses import DiceLoss

        if not 0.0 <= float(batch_weight) <= 1.0:
            raise ValueError(f"batch_weight must be in [0, 1], got {batch_weight}")
        if lambda_dice < 0 or lambda_bce < 0:
            raise ValueError(f"lambda_dice and lambda_bce must be >= 0, got {lambda_dice} and {lambda_bce}")
        self.batch_weight, self.lambda_dice, self.lambda_bce = float(batch_weight), float(lambda_dice), float(lambda_bce)
        weights = None
        if region_weights is not None:
            weights = torch.as_tensor([float(w) for w in region_weights])
            if weights.ndim != 1 or len(weights) == 0 or bool((weights < 0).any()) or float(weights.sum()) <= 0:
                raise ValueError(f"region_weights must be non-negative numbers, one per channel, not all 0; got {region_weights}")
            weights = weights * (len(weights) / weights.sum())
        self.region_weights = weights
        # MONAI's DiceLoss weighs each channel's Dice itself (``weight``); the cross-entropy gets the
        # same weights through torch's ``weight`` (equal voxel counts per channel: the same weighted mean)
        self.batch_dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=smooth_nr, smooth_dr=smooth_dr, weight=weights)
        self.slice_dice = DiceLoss(sigmoid=True, batch=False, smooth_nr=smooth_nr, smooth_dr=smooth_dr, weight=weights)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``input``: logits ``[B, C, ...]``; ``target``: the region masks, same shape."""
        if input.shape != target.shape:
            raise ValueError(f"DiceBCELoss needs one target channel per region: input {tuple(input.shape)}, target {tuple(target.shape)}")
        if self.region_weights is not None and len(self.region_weights) != input.shape[1]:
            raise ValueError(f"DiceBCELoss has {len(self.region_weights)} region_weights for {input.shape[1]} channels")
        target = target.to(input.dtype)
        bce_weight = None
        if self.region_weights is not None:
            bce_weight = self.region_weights.to(input).reshape(1, -1, *[1] * (input.ndim - 2))
        loss = self.lambda_bce * nn.functional.binary_cross_entropy_with_logits(input, target, weight=bce_weight)
        if self.batch_weight:
            loss = loss + self.lambda_dice * self.batch_weight * self.batch_dice(input, target)
        if self.batch_weight < 1.0:
            loss = loss + self.lambda_dice * (1.0 - self.batch_weight) * self.slice_dice(input, target)
        return loss


class Autocast(nn.Module):
    """Run ``net`` under bfloat16 autocast on the input's device; return float32.

    Used around the 2D network in training (MONAI's ``amp=True`` is CUDA-only float16). Its
    state dict is the wrapped network's, under ``net.``.
    """

    def __init__(self, net: nn.Module, enabled: bool = True):
        super().__init__()
        self.net = net
        self.enabled = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.net(x)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            return self.net(x).float()


def bf16_supported(device="cpu") -> bool:
    """Whether bfloat16 autocast is fast here: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        caps = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - very old torch
        return False
    if "AVX512" not in caps.upper() and "AMX" not in caps.upper():
        return False
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _atomic_save(state: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)


def save_weights(network: nn.Module, out) -> Optional[str]:
    """Save ``network``'s state dict to ``out`` (atomically; a DDP or :class:`Autocast` wrapper
    is unwrapped); under ``torch.distributed`` only rank 0 writes. Returns ``out`` where written."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel, Autocast)):
        network = network.module if hasattr(network, "module") else network.net
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return None
    _atomic_save(network.state_dict(), Path(out))
    return str(out)


def load_member(path) -> dict:
    """The 2D network's state dict from a member file: a bare state dict (``final_model.pt``,
    ``models/fold<i>/model.pt``), one saved through :class:`Autocast` (``net.`` keys) or a
    training checkpoint (``{"network": ...}``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state.get("network"), dict):
        state = state["network"]
    return {k[4:] if k.startswith("net.") else k: v for k, v in state.items()}


def widen_neighbour_channels(state: dict, own: dict, n_modalities: int = 4) -> dict:
    """Grow a 2.5D network's first layer from K to K' > K neighbour slices (net2net style).

    The input channels are neighbour-major (:func:`neighbour_stack`: offset ``-K..K``, each
    ``n_modalities`` channels), so a K model's weights are the centre ``4 (2K + 1)`` input
    channels of a K' model; the added outer neighbours get zero weights. The widened network
    computes exactly what the K network did, and training then learns to use the extra slices.

    Args:
        state: the trained state dict (K neighbours).
        own: the new network's state dict (K' neighbours), for the shapes.
        n_modalities: channels per slice.

    Returns:
        ``state`` with every tensor that differs from ``own`` only in its input channels
        (dimension 1, a multiple of ``n_modalities`` each side) widened; other tensors as they were.

    Raises:
        ValueError: for a tensor whose shape cannot be widened this way (another architecture).
    """
    out = dict(state)
    for key, value in state.items():
        target = own.get(key)
        if target is None or target.shape == value.shape:
            continue
        c_old, c_new = (value.shape[1], target.shape[1]) if value.dim() > 1 else (0, 0)
        same_rest = value.dim() == target.dim() and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]
        if not (same_rest and c_new > c_old and c_old % n_modalities == 0 and c_new % n_modalities == 0
                and (c_new - c_old) % (2 * n_modalities) == 0):
            raise ValueError(f"cannot widen {key!r} from shape {tuple(value.shape)} to {tuple(target.shape)}: "
                             "only the input channels of a 2.5D network with more neighbour slices can grow")
        start = (c_new - c_old) // 2
        grown = torch.zeros_like(target, dtype=value.dtype)
        grown[:, start:start + c_old] = value
        out[key] = grown
    return out


def load_initial_weights(net: nn.Module, path: str | Path | None, fold: int | None = None) -> nn.Module:
    """Start training from trained weights (fine-tuning, a warm restart of the schedule).

    Args:
        net: the network the config builds.
        path: a member file (bare state dict, :class:`Autocast` or ``{"network": ...}``, as
            :func:`load_member` reads), ``{fold}`` in it replaced by
            the fold trained, so each fold starts from its own fold's model and the
            out-of-fold predictions stay honest. A model with fewer neighbour slices is
            widened (:func:`widen_neighbour_channels`).
        fold: the fold trained, for ``{fold}``.

    Raises:
        FileNotFoundError: naming the file when it does not exist.
        ValueError: when ``{fold}`` is in ``path`` but no fold is trained, or the weights do
            not fit the network.
    """
    if not path:
        return net
    path = str(path)
    if "{fold}" in path:
        if fold is None:
            raise ValueError(f"train#init_weights {path!r} names a fold ({{fold}}) but no fold is trained (use --fold or cv train)")
        path = path.replace("{fold}", str(int(fold)))
    if not Path(path).is_file():
        raise FileNotFoundError(f"train#init_weights: no such file: {path}")
    own = net.state_dict()
    try:
        state = widen_neighbour_channels(load_member(path), own)
        net.load_state_dict(state)  # strict: every tensor must fit (copied into the network's own dtype)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"train#init_weights {path}: the weights do not fit the config's network: {str(e).splitlines()[0]}") from None
    logger.info("initial weights from %s (%d tensors)", path, len(state))
    return net


def assemble_ensemble(member_files: Sequence, ensemble: nn.Module, out, half: bool = True) -> Optional[str]:
    """Write the members' weights as the ensemble's ``model.pt``, once every member exists.

    Args:
        member_files: one state-dict file per ensemble member, in member order (the bundle's
            ``models/fold<i>/model.pt``, a CV run's ``final_model.pt``; :func:`load_member`).
        ensemble: the bundle's ``network_def`` (``SliceWise25D(ProbabilityMean(nets))``); its
            ``net.nets[i]`` takes member ``i``.
        out: the ensemble file to write (``models/model.pt``).
        half: store float16 (half the size; the bundle loads it into float32 modules).

    Returns:
        ``out`` when written (``ensemble`` then holds the members' weights), ``None`` when some
        member is not trained yet.
    """
    files = [Path(f) for f in member_files]
    if not all(f.is_file() for f in files):
        return None
    nets = ensemble.net.nets
    if len(nets) != len(files):
        raise ValueError(f"the ensemble has {len(nets)} members, got {len(files)} member files")
    for net, f in zip(nets, files):
        net.load_state_dict(load_member(f))
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return None
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ensemble.state_dict().items()}
    _atomic_save(state, Path(out))
    return str(out)
