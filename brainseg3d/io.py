"""Writers and reports: atomic NIfTI writes, per-case JSON report, Slicer colour table, preview PNG.

Nothing is ever half-written: every file goes to a temporary name in the target folder first
and is renamed into place (``os.replace`` is atomic on one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = [
    "LABEL_NAMES",
    "LABEL_COLOURS",
    "atomic_path",
    "save_label_image",
    "write_json",
    "label_volumes_ml",
    "write_colour_table",
    "write_preview",
]

#: BraTS label value -> name, for both label schemes (ET is 4 up to 2021, 3 from 2023)
LABEL_NAMES = {
    "brats": {0: "background", 1: "necrotic tumour core", 2: "peritumoral edema", 4: "enhancing tumour"},
    "brats2023": {0: "background", 1: "necrotic tumour core", 2: "peritumoral edema", 3: "enhancing tumour"},
}
#: colours (RGB 0-255) as in 3D Slicer's BraTS-style tables: core red, edema green, ET yellow
LABEL_COLOURS = {1: (255, 0, 0), 2: (0, 200, 0), 3: (255, 255, 0), 4: (255, 255, 0)}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_label_image(img: nib.Nifti1Image, path: str | os.PathLike) -> Path:
    """Write a label map atomically as uint8 NIfTI (viewers and ITK cannot take int64 masks)."""
    data = np.asarray(img.dataobj)
    if data.min() < 0 or data.max() > 255:
        raise ValueError(f"label values outside uint8: {data.min()}..{data.max()}")
    hdr = img.header.copy()
    hdr.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(data.astype(np.uint8), img.affine, hdr)
    out.header.set_slope_inter(1, 0)
    with atomic_path(path) as tmp:
        nib.save(out, str(tmp))
    return Path(path)


def write_json(obj, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")
    return Path(path)


def label_volumes_ml(labels: np.ndarray, voxel_ml: float, et_label: int = 4) -> dict[str, float]:
    """Volumes in ml of each tumour part and of the BraTS regions TC and WT."""
    n = {v: int((labels == v).sum()) for v in (1, 2, et_label)}
    vol = {
        "necrotic_core_ml": n[1] * voxel_ml,
        "edema_ml": n[2] * voxel_ml,
        "enhancing_tumour_ml": n[et_label] * voxel_ml,
    }
    vol["tumour_core_ml"] = vol["necrotic_core_ml"] + vol["enhancing_tumour_ml"]
    vol["whole_tumour_ml"] = vol["tumour_core_ml"] + vol["edema_ml"]
    return {k: round(v, 3) for k, v in vol.items()}


def write_colour_table(path: str | os.PathLike, labels: str = "brats") -> Path:
    """A 3D Slicer colour table (``.ctbl``/``.txt``: ``value name R G B A``) so a mask opens
    with named, coloured segments; ``.csv`` writes ``value,name,R,G,B``."""
    path = Path(path)
    names = LABEL_NAMES[labels]
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            if path.suffix == ".csv":
                f.write("value,name,R,G,B\n")
                for v, name in names.items():
                    if v:
                        f.write(f"{v},{name},{','.join(map(str, LABEL_COLOURS[v]))}\n")
            else:
                f.write("# brainseg3d BraTS colour table (3D Slicer): value name R G B A\n")
                f.write("0 background 0 0 0 0\n")
                for v, name in names.items():
                    if v:
                        r, g, b = LABEL_COLOURS[v]
                        f.write(f"{v} {name.replace(' ', '_')} {r} {g} {b} 255\n")
    return path


def write_preview(
    image: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    title: str = "",
    labels_scheme: str = "brats",
    n_slices: int = 6,
    alpha: float = 0.45,
    affine: np.ndarray | None = None,
) -> Path:
    """A PNG montage of axial slices through the tumour with a coloured overlay and a legend.

    Args:
        image: one 3D modality (e.g. FLAIR), on the same grid as ``labels``.
        labels: the 3D label map.
        affine: the grid's voxel-to-world affine: the views are turned to RAS first, so they
            show anterior up and the patient's left on the left (neurological convention),
            whatever the file's orientation.
    """
    if affine is not None:
        ornt = nib.orientations.io_orientation(affine)
        image = nib.orientations.apply_orientation(image, ornt)
        labels = nib.orientations.apply_orientation(labels, ornt)
    # the object API (no pyplot): no global figure state, so writer threads can draw at once
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = LABEL_NAMES[labels_scheme]
    z_tumour = np.nonzero(labels)[2]
    if z_tumour.size:  # slices through the bulk of the tumour (5th-95th percentile of its voxels)
        zs = np.unique(np.percentile(z_tumour, np.linspace(5, 95, n_slices)).round().astype(int))
    else:
        z_brain = np.nonzero(image.any(axis=(0, 1)))[0]
        zs = np.unique(np.linspace(z_brain.min(), z_brain.max(), n_slices + 2)[1:-1].round().astype(int)) if z_brain.size else [image.shape[2] // 2]
    fig = Figure(figsize=(2.6 * len(zs), 3.2))
    axes = fig.subplots(1, len(zs))
    axes = np.atleast_1d(axes)
    lo, hi = np.percentile(image[image != 0], (1, 99)) if (image != 0).any() else (0, 1)
    for ax, z in zip(axes, zs):
        sl = np.rot90(image[:, :, z])
        lab = np.rot90(labels[:, :, z])
        rgba = np.zeros((*lab.shape, 4))
        for v in names:
            if v:
                rgba[lab == v, :3] = np.array(LABEL_COLOURS[v]) / 255
                rgba[lab == v, 3] = alpha
        ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi)
        ax.imshow(rgba)
        ax.set_title(f"z={z}", fontsize=8)
        ax.axis("off")
    handles = [Patch(color=np.array(LABEL_COLOURS[v]) / 255, label=f"{v}: {n}") for v, n in names.items() if v]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    return Path(path)
