"""Input sanity checks: the one place that decides whether a case can be segmented honestly.

Used by every way in: the CLI and the batch runner (files, through
:meth:`brainseg3d.inference.Predictor.load`), the Python API (``Predictor.segment_image`` and
``brainseg3d.segment`` with arrays or ``Nifti1Image``), the web app (``Predictor.load``) and the
MONAI bundle (:class:`CheckedDataset`, the dataset of ``configs/inference.json``).

Each check raises :class:`~brainseg3d.core.cases.CaseError` (``"<case>: <problem>"``, naming the
modality) for an input that would give a silently wrong mask, or returns warnings for one that
can still be segmented honestly (they go to the log and to the report's ``warnings``).

==================================  ===============================================================
check                               outcome
==================================  ===============================================================
NaN / infinite voxels               error (``image holds NaN or infinite values (t1ce: 10 NaN)``)
all four modalities zero            error
one modality zero / constant        error (the network would see a missing sequence)
a 0/1 (or few-valued) modality      error (a mask or label map given as an image)
a modality covering far less        warning
mirrored header (handedness)        error (registration cannot undo a left-right flip)
singular affine                     error
volume too small for the network    error (< 16 voxels in-plane after cropping at 1 mm)
5D ``(X, Y, Z, 1, C)`` image        the singleton dimension is squeezed
==================================  ===============================================================

This module imports only MONAI, torch, numpy, nibabel and :mod:`.cases` (the bundle carries a
verbatim copy as ``scripts/checks.py``).

Example:
    >>> from brainseg3d.core.checks import check_image
    >>> warnings = check_image(np.stack([t1, t1ce, t2, flair]), "case_1")
"""

from __future__ import annotations

import logging
from typing import Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose, EnsureChannelFirstd, MapTransform

from .cases import MODALITIES, Case, CaseError

__all__ = [
    "MIN_IN_PLANE",
    "CheckImaged",
    "CheckedDataset",
    "check_affine",
    "check_finite",
    "check_handedness",
    "check_headers",
    "check_image",
    "check_modality",
    "check_network_size",
    "with_input_checks",
]

logger = logging.getLogger(__name__)

#: the smallest in-plane size (voxels, after resampling to 1 mm and cropping to the brain) the
#: network takes: its four stride-2 levels reduce 16 voxels to 1
MIN_IN_PLANE = 16
#: a modality whose non-zero voxels cover less than this share of the best-covered modality's
#: is reported (a cut field of view, or a sequence of another patient)
MIN_COVERAGE = 0.5
#: a modality with at most this many distinct (integer) values is a mask or label map
MAX_LABEL_VALUES = 6
#: relative tolerance for a singular voxel-to-world matrix
_SINGULAR_RTOL = 1e-6


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.as_tensor() if hasattr(x, "as_tensor") else x
    return torch.as_tensor(np.asarray(x))


def _fmt(v: float) -> str:
    return f"{v:g}"


def check_finite(data, case_id: str, modality: str) -> None:
    """Raise :class:`CaseError` when a modality holds NaN or infinite voxels (named and counted)."""
    x = _as_tensor(data)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):  # one pass; counted only when there is something to name
        nan = int(torch.isnan(x).sum())
        inf = int(torch.isinf(x).sum())
        if nan or inf:
            what = ", ".join(f"{n} {k}" for n, k in ((nan, "NaN"), (inf, "infinite")) if n)
            raise CaseError(case_id, f"image holds NaN or infinite values ({modality}: {what} voxels)")


def check_modality(data, case_id: str, modality: str) -> list[str]:
    """Check one modality's voxels (any shape).

    Args:
        data: the modality's voxels (array or tensor).
        case_id: named in the error.
        modality: named in the error (``t1``, ``t1ce``, ``t2``, ``flair``).

    Returns:
        Warnings (empty: none); this check has none of its own.

    Raises:
        CaseError: NaN or infinite voxels, every voxel 0, a constant volume, or a volume of two
            (or a few integer) values: a mask or label map, not an MRI image.
    """
    x = _as_tensor(data).reshape(-1)
    if x.numel() == 0:
        raise CaseError(case_id, f"{modality} holds no voxels")
    check_finite(x, case_id, modality)
    return _check_values(x, case_id, modality)


def _check_values(x: torch.Tensor, case_id: str, modality: str) -> list[str]:
    """:func:`check_modality` after the finiteness check, on the flat voxels."""
    lo, hi = (float(v) for v in torch.aminmax(x))
    if lo == hi:
        if lo == 0:
            raise CaseError(case_id, f"{modality} is empty (every voxel is 0): a missing or blank sequence")
        raise CaseError(case_id, f"{modality} is constant (every voxel is {_fmt(lo)}): not an MRI image")
    step = max(1, x.numel() // 200_000)
    values = torch.unique(x[::step])  # a sample: more than two values in it, more than two in x
    if len(values) <= 2 and bool(((x == lo) | (x == hi)).all()):
        raise CaseError(case_id, f"{modality} holds only the values {_fmt(lo)} and {_fmt(hi)}: it looks like a binary mask, not an MRI image")
    if len(values) <= MAX_LABEL_VALUES and bool((values == values.round()).all()) and bool(torch.isin(x, values).all()):
        shown = ", ".join(_fmt(float(v)) for v in values)
        raise CaseError(case_id, f"{modality} holds only the values {shown}: it looks like a label map, not an MRI image")
    return []


def check_image(image, case_id: str, modalities: Sequence[str] = MODALITIES) -> list[str]:
    """Check a stacked image ``[C, X, Y, Z]`` (channels in ``modalities`` order).

    Args:
        image: the four modalities, channel first (array or tensor; more trailing dimensions
            are fine).
        case_id: named in errors and warnings.
        modalities: the channel names.

    Returns:
        Warnings for a case that can still be segmented (a modality that covers far less of the
        volume than the others).

    Raises:
        CaseError: all modalities empty, or any :func:`check_modality` problem.
    """
    x = _as_tensor(image)
    if x.ndim < 2 or x.shape[0] != len(modalities):
        raise CaseError(case_id, f"expected {len(modalities)} modalities [C, X, Y, Z], got shape {tuple(x.shape)}")
    for m, c in zip(modalities, x):
        check_finite(c, case_id, m)
    if all(not bool(c.any()) for c in x):
        raise CaseError(case_id, f"all {len(modalities)} modalities are empty (every voxel is 0)")
    warnings: list[str] = []
    for m, c in zip(modalities, x):
        warnings += _check_values(c.reshape(-1), case_id, m)  # finiteness checked above
    cover = [int(torch.count_nonzero(c)) for c in x]
    best = max(cover)
    for m, n in zip(modalities, cover):
        if n < MIN_COVERAGE * best:
            warnings.append(f"{m} covers only {100.0 * n / best:.0f} % of the voxels the best-covered modality covers "
                            f"(cut field of view?); the mask may miss tumour there")
    return warnings


def check_affine(affine, case_id: str, what: str) -> None:
    """Raise :class:`CaseError` for a voxel-to-world matrix that is singular or not finite.

    Args:
        affine: a 4x4 affine.
        case_id: named in the error.
        what: the file or modality, named in the error.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise CaseError(case_id, f"{what} has an invalid affine (not a finite 4x4 matrix)")
    m = a[:3, :3]
    scale = float(np.abs(m).max())
    if scale == 0 or abs(float(np.linalg.det(m))) <= _SINGULAR_RTOL * scale**3:
        raise CaseError(case_id, f"{what} has a singular affine (voxel-to-world matrix with determinant 0): "
                                 f"its header has no valid voxel size or orientation")


def check_handedness(affines: Mapping[str, np.ndarray], case_id: str) -> None:
    """Raise :class:`CaseError` when the modalities' headers disagree on left and right.

    A header of the other handedness (determinant of the other sign) with unflipped data is a
    mirror image: rigid registration cannot undo it and would segment a mirrored brain.

    Args:
        affines: modality -> 4x4 affine, the first one the reference.
        case_id: named in the error.
    """
    items = list(affines.items())
    if len(items) < 2:
        return
    ref_name, ref = items[0]
    ref_sign = np.sign(np.linalg.det(np.asarray(ref)[:3, :3]))
    for name, a in items[1:]:
        if np.sign(np.linalg.det(np.asarray(a)[:3, :3])) != ref_sign:
            raise CaseError(case_id, f"{name}'s header is mirrored relative to {ref_name} (its affine has the other "
                                     f"handedness): the files disagree on left and right; fix the header "
                                     f"(registration cannot undo a mirror image)")


def check_headers(case: Case) -> None:
    """The header checks of a case (singular affines, handedness), without reading voxels.

    Raises:
        CaseError: a header problem; an unreadable header is left to
            :func:`~brainseg3d.core.cases.inspect_case`, which names it.
    """
    files = [(case.image4d.name, case.image4d)] if case.image4d is not None else [(m, case.images[m]) for m in MODALITIES if m in case.images]
    affines = {}
    for name, f in files:
        try:
            affines[name] = nib.load(str(f)).affine
        except Exception:  # reported as "unreadable file" by inspect_case
            return
    for name, a in affines.items():
        check_affine(a, case.case_id, name)
    check_handedness(affines, case.case_id)


def check_network_size(shape: Sequence[int], case_id: str, min_in_plane: int = MIN_IN_PLANE) -> None:
    """Raise :class:`CaseError` for a preprocessed volume (``[X, Y, Z]`` at 1 mm, cropped to the
    brain) too small for the network: fewer than ``min_in_plane`` voxels in-plane (X or Y), or
    no slice at all."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape[:2]) < min_in_plane or shape[2] < 1:
        raise CaseError(case_id, f"volume too small for the network: {'x'.join(map(str, shape))} voxels after resampling "
                                 f"to 1 mm and cropping to the brain; it needs at least {min_in_plane} in-plane")


class CheckImaged(MapTransform):
    """Dictionary transform: run :func:`check_image` on ``keys`` (channel first, raw intensities).

    Placed right after :class:`~monai.transforms.EnsureChannelFirstd` by :func:`with_input_checks`.
    A 5D image ``[C, X, Y, Z, 1]`` (a ``(X, Y, Z, 1, C)`` NIfTI) loses its singleton dimension.
    Warnings are logged and appended to ``d[warnings_key]``.

    Args:
        keys: the image key(s).
        case_key: the key holding the case id (``"case"``); the file name is used without it.
        warnings_key: where the warnings go.
    """

    def __init__(self, keys, case_key: str = "case", warnings_key: str = "input_warnings", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.case_key, self.warnings_key = case_key, warnings_key

    def _case_id(self, d: Mapping[Hashable, object], key) -> str:
        if self.case_key in d:
            return str(d[self.case_key])
        meta = getattr(d[key], "meta", {}) or {}
        src = meta.get("filename_or_obj", "image")
        return str(src[0] if isinstance(src, (list, tuple)) else src)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            while img.ndim > 4 and img.shape[-1] == 1:  # (X, Y, Z, 1, C) NIfTI -> [C, X, Y, Z, 1]
                img = img[..., 0]
            if img.ndim != 4:
                raise CaseError(self._case_id(d, key), f"expected 4 modalities [C, X, Y, Z], got shape {tuple(img.shape)}")
            d[key] = img
            warnings = check_image(img, self._case_id(d, key))
            for w in warnings:
                logger.warning("%s: %s", self._case_id(d, key), w)
            d[self.warnings_key] = list(d.get(self.warnings_key, [])) + warnings
        return d


def with_input_checks(chain: Compose, keys: str | Sequence[str] = "image", case_key: str = "case") -> Compose:
    """``chain`` with a :class:`CheckImaged` right after its (first) ``EnsureChannelFirstd``.

    The checks see the raw intensities, channel first, before any resampling or normalization.
    The result is invertible exactly as ``chain`` is (the check records no operation).
    """
    transforms = list(chain.transforms)
    at = next((i + 1 for i, t in enumerate(transforms) if isinstance(t, EnsureChannelFirstd)), 0)
    transforms.insert(at, CheckImaged(keys, case_key=case_key))
    return Compose(transforms, map_items=chain.map_items, unpack_items=chain.unpack_items, lazy=chain.lazy)


class CheckedDataset(torch.utils.data.IterableDataset):
    """The bundle's inference dataset: each item is checked and transformed once; an item that
    fails (unreadable or truncated file, a failed check) is skipped with a warning naming it, and
    the others go on.

    Used with ``num_workers=0`` (the bundle's setting): each item is tried once, so when the
    engine asks for a second pass to fill the length it was promised (``len(data)``, before
    anything was skipped), nothing is repeated.

    Args:
        data: MONAI items ``{"case", "image"}`` (:func:`~brainseg3d.core.cases.inference_items`).
        transform: the preprocessing chain (``CheckImaged`` is added after ``EnsureChannelFirstd``).
        min_in_plane: see :func:`check_network_size`.
    """

    def __init__(self, data: Sequence[dict], transform: Compose, min_in_plane: int = MIN_IN_PLANE):
        super().__init__()
        self.data = list(data)
        self.transform = with_input_checks(transform)
        self.min_in_plane = min_in_plane
        self.skipped: dict[str, str] = {}
        self._tried: set[int] = set()

    def __len__(self) -> int:
        return len(self.data)

    def _load(self, item: dict) -> dict:
        case_id = str(item.get("case", "case"))
        images = item["image"] if isinstance(item["image"], (list, tuple)) else [item["image"]]
        if len(images) == len(MODALITIES):
            check_headers(Case(case_id, images=dict(zip(MODALITIES, map(_path, images)))))
        elif len(images) == 1:
            check_headers(Case(case_id, image4d=_path(images[0])))
        d = self.transform(dict(item))
        check_network_size(d["image"].shape[1:], case_id, self.min_in_plane)
        d.pop("input_warnings", None)  # logged; not collated into the batch
        return d

    def __iter__(self):
        for i, item in enumerate(self.data):
            if i in self._tried:
                continue
            self._tried.add(i)
            case_id = str(item.get("case", i))
            try:
                yield self._load(item)
            except Exception as e:  # one bad case must not stop the others
                problem = e.problem if isinstance(e, CaseError) else _root_cause(e)
                self.skipped[case_id] = problem
                logger.warning("skipping %s: %s", case_id, problem)


def _path(p):
    from pathlib import Path

    return Path(str(p))


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    if isinstance(e, CaseError):
        return e.problem
    return f"cannot read or preprocess: {type(e).__name__}: {e}"
