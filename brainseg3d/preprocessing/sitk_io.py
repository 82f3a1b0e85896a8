"""SimpleITK helpers shared by the raw-scan stages (registration, skull stripping): reading a
3D scalar volume, the same-grid check (one tolerance: :data:`brainseg3d.core.cases.GRID_ATOL`,
the one discovery uses), atomic writes (through :func:`brainseg3d.io.atomic_path`, as every
other writer), and the line of an ITK error worth showing a user."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from brainseg3d.core.cases import GRID_ATOL
from brainseg3d.io import atomic_path

__all__ = ["itk_error_text", "as_3d", "read_volume", "same_grid", "write_atomic"]


def itk_error_text(e: BaseException) -> str:
    """The last line of an exception's message (ITK's are long C++ traces), or its type."""
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def as_3d(img: sitk.Image, what: str = "image") -> sitk.Image:
    """``img`` as a 3D scalar volume (a 4D file of one volume is squeezed).

    Raises:
        ValueError: not a 3D scalar volume, naming ``what``.
    """
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = sitk.Extract(img, list(img.GetSize()[:3]) + [0], [0, 0, 0, 0])
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{what} is not a 3D scalar volume (size {img.GetSize()})")
    return img


def read_volume(image, what: str | None = None) -> sitk.Image:
    """A path (any SimpleITK-readable file) or an image, as a 3D scalar volume.

    Raises:
        RuntimeError: SimpleITK cannot read the file (its error).
        ValueError: not a 3D scalar volume.
    """
    img = image if isinstance(image, sitk.Image) else sitk.ReadImage(str(image))
    return as_3d(img, what or (Path(image).name if not isinstance(image, sitk.Image) else "image"))


def same_grid(a: sitk.Image, b: sitk.Image, atol: float = GRID_ATOL) -> bool:
    """Same size, and spacing, origin and direction within ``atol`` (mm and cosines)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=atol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=atol)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=atol)
    )


def write_atomic(img: sitk.Image, out: str | os.PathLike, compression_level: int = 1) -> None:
    """Write ``img`` so that ``out`` appears whole or not at all (:func:`brainseg3d.io.atomic_path`).
    Level 1 gzip: these are intermediate files, speed first."""
    with atomic_path(out) as tmp:
        sitk.WriteImage(img, str(tmp), True, compression_level)
