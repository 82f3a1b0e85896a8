"""Writers and reports: atomic NIfTI writes, per-case JSON report, Slicer colour table, preview PNG.

Nothing is ever half-written: every file goes to a temporary name in the target folder first
and is renamed into place (``os.replace`` is atomic on one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from brainseg3d.core.labels import LABEL_COLOURS, LABEL_NAMES

__all__ = [
    "OutputError",
    "MASK_FORMATS",
    "OUTPUT_FORMATS",
    "mask_format_for",
    "save_label_like",
    "check_writable_dir",
    "clean_stale",
    "make_workdir",
    "mask_is_complete",
    "pid_alive",
    "atomic_path",
    "save_label_image",
    "write_json",
    "write_record",
    "label_volumes_ml",
    "write_colour_table",
    "write_preview",
]




class OutputError(ValueError):
    """An output folder or file that cannot be created or written; the message says which and why."""


def current_umask() -> int:
    """The process umask: from ``/proc/self/status`` where it is there (reading it changes
    nothing, so it is safe beside other threads), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _owner_tag() -> str:
    """``<host>-<pid>``: names every temporary of this process (see :func:`clean_stale`)."""
    host = "".join(ch if ch.isalnum() else "_" for ch in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


#: temporaries of this package: ``.<name>.<host>-<pid>.<random>.part<ext>`` (files) and
#: ``.brainseg3d-<tag>.<host>-<pid>.<random>`` (work folders)
_TEMP_RE = re.compile(r"^\.(?P<name>.*?)\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+(\.part.*)?$")


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine (also when it is another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def clean_stale(folder: str | os.PathLike, max_age_s: float = 86400.0) -> list[Path]:
    """Remove the temporaries of runs that are gone; never those of a live run.

    A temporary named by :func:`atomic_path` or :func:`make_workdir` carries its writer's host
    and PID: it is removed when that process no longer runs on this host. One of another host
    (a shared folder written by several machines) or of an older naming without a PID is
    removed only when it is older than ``max_age_s``.

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    this_host = _owner_tag().rsplit("-", 1)[0]
    now = time.time()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        name = p.name
        ours = name.startswith(".") and (".part" in name or name.startswith(".brainseg3d-"))
        if not ours:
            continue
        m = _TEMP_RE.match(name)
        try:
            if m and m.group("host") == this_host:
                stale = not pid_alive(int(m.group("pid")))
            else:
                stale = now - p.lstat().st_mtime > max_age_s
            if not stale:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
            removed.append(p)
        except FileNotFoundError:
            continue
        except OSError:
            continue
    return removed


def make_workdir(root: str | os.PathLike | None, tag: str) -> Path:
    """A new work folder ``<root>/.brainseg3d-<tag>.<host>-<pid>.<random>`` (``root`` None: the
    system temp folder); :func:`clean_stale` removes it once this process is gone."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in tag)[:60]
    root = Path(root) if root is not None else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".brainseg3d-{safe}.{_owner_tag()}.", dir=root))


def check_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) and prove that a file can be written in it.

    Raises:
        OutputError: naming the folder and the reason (under a regular file, read-only file
            system, no permission, disk full).
    """
    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"cannot use the output folder {folder}: it is a file, not a folder")
        for parent in folder.parents:
            if parent.exists() and not parent.is_dir():
                raise OutputError(f"cannot create the output folder {folder}: {parent} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".write-test.{_owner_tag()}.", suffix=".part", dir=folder)
        try:
            os.write(fd, b"brainseg3d")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OutputError:
        raise
    except OSError as e:
        why = e.strerror or str(e)
        raise OutputError(f"cannot write to the output folder {folder}: {why}") from e
    return folder


def describe_os_error(e: BaseException) -> str:
    """A one-line message for an error while writing an output (``No space left on device: <path>``)."""
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        return f"cannot write the outputs ({e.strerror}{where})"
    return f"{type(e).__name__}: {e}"


def mask_is_complete(path: str | os.PathLike) -> tuple[bool, str]:
    """Whether an existing mask is a whole, readable NIfTI (resume skips only those).

    Returns:
        ``(ok, reason)``: the reason says what is wrong (empty file, unreadable header, data
        truncated).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return False, "empty file"
        img = nib.load(str(path))
        if len(img.shape) < 3 or min(img.shape) < 1:
            return False, f"not a 3D volume (shape {img.shape})"
        np.asarray(img.dataobj)
    except Exception as e:  # nibabel / gzip raise many types for a damaged file
        return False, f"{type(e).__name__}: {e}"
    return True, ""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary, ``.<name>.<host>-<pid>.<random>.part<ext>``, names its writer, so that a run
    starting on the same folder removes it only once its writer is gone (:func:`clean_stale`).
    The file gets the permissions an ordinary new file gets (``0o666`` less the umask), not the
    ``0o600`` of :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.{_owner_tag()}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
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


#: output formats of a mask besides NIfTI (single-file ones: the write is atomic)
MASK_FORMATS = {"nrrd": ".nrrd", "mha": ".mha"}
#: ``--output-format`` choices: NIfTI only (default), also the input's format, or also NRRD / MetaImage
OUTPUT_FORMATS = ("nifti", "input", *MASK_FORMATS)


def mask_format_for(path: str | os.PathLike) -> str | None:
    """The mask format matching an input file (``nrrd`` for ``.nrrd`` / ``.nhdr``, ``mha`` for
    ``.mha`` / ``.mhd``), or ``None`` for NIfTI."""
    low = str(path).lower()
    if low.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if low.endswith((".mha", ".mhd")):
        return "mha"
    return None


def save_label_like(img: nib.Nifti1Image, path: str | os.PathLike, like: str | os.PathLike | None = None) -> Path:
    """Write a label map atomically in ``path``'s format (``.nrrd`` or ``.mha``, uint8,
    compressed) on its own grid: with the ITK geometry (origin, spacing, direction) of the image
    file ``like`` when given (the mask then opens on that image in 3D Slicer or ITK-SNAP),
    else the geometry of ``img``'s affine.

    Raises:
        ValueError: the mask is not on ``like``'s grid (shape or affine differ), or its
            values do not fit uint8.
    """
    import SimpleITK as sitk

    from brainseg3d.core.cases import GRID_ATOL, itk_ras_affine

    data = np.asarray(img.dataobj)
    if data.min() < 0 or data.max() > 255:
        raise ValueError(f"label values outside uint8: {data.min()}..{data.max()}")
    if like is not None:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(like))
        reader.ReadImageInformation()
        size = tuple(reader.GetSize()[:3])
        if tuple(data.shape[:3]) != size or not np.allclose(itk_ras_affine(reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin()),
                                                             img.affine, atol=GRID_ATOL):
            raise ValueError(f"the mask (shape {data.shape[:3]}) is not on the grid of {Path(like).name} (shape {size}): not written")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(img.affine, np.float64)  # RAS -> ITK's LPS
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data.astype(np.uint8), (2, 1, 0))))
    out.SetSpacing(tuple(float(x) for x in spacing))
    out.SetOrigin(tuple(float(x) for x in lps[:3, 3]))
    out.SetDirection(tuple(float(x) for x in (lps[:3, :3] / spacing).ravel()))
    with atomic_path(path) as tmp:
        sitk.WriteImage(out, str(tmp), True)
    return Path(path)


def write_json(obj, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")
    return Path(path)


def write_record(obj, markdown: str, out: str | os.PathLike) -> str:
    """An analysis record: ``obj`` as ``OUT.json`` and its table ``markdown`` as ``OUT.md``
    (each written atomically); returns ``markdown``, for the caller to print."""
    out = Path(out)
    write_json(obj, out.with_suffix(".json"))
    with atomic_path(out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(markdown)
    return markdown


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


#: orientation letters at the (left, right, top, bottom) edges of an axial view
_AXIAL_LETTERS = {"radiological": ("R", "L", "A", "P"), "neurological": ("L", "R", "A", "P")}


def preview_slice(volume: np.ndarray, z: int, convention: str = "radiological") -> np.ndarray:
    """An axial slice of a RAS volume as displayed: anterior up; the patient's right on the
    image's left (``radiological``, as 3D Slicer and ITK-SNAP show it) or on its right
    (``neurological``)."""
    if convention not in _AXIAL_LETTERS:
        raise ValueError(f"convention must be radiological or neurological, got {convention!r}")
    sl = np.rot90(volume[:, :, z])  # rows: anterior first; columns: the patient's left to right
    return sl[:, ::-1] if convention == "radiological" else sl


def write_preview(
    image: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    title: str = "",
    labels_scheme: str = "brats",
    n_slices: int = 6,
    alpha: float = 0.45,
    affine: np.ndarray | None = None,
    convention: str = "radiological",
) -> Path:
    """A PNG montage of axial slices through the tumour with a coloured overlay, orientation
    letters on every view and a legend that names the convention.

    Args:
        image: one 3D modality (e.g. FLAIR), on the same grid as ``labels``.
        labels: the 3D label map.
        affine: the grid's voxel-to-world affine: the views are turned to RAS first, so the
            letters hold whatever the file's orientation, and pixels get the voxels' mm
            aspect (every view at one mm scale).
        convention: ``radiological`` (default, the patient's right on the image's left, as
            Slicer and ITK-SNAP) or ``neurological``.
    """
    zooms = (1.0, 1.0, 1.0)
    if affine is not None:
        ornt = nib.orientations.io_orientation(affine)
        image = nib.orientations.apply_orientation(image, ornt)
        labels = nib.orientations.apply_orientation(labels, ornt)
        spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
        zooms = tuple(float(spacing[int(ornt[i, 0])]) for i in range(3))
    letters = _AXIAL_LETTERS.get(convention)
    if letters is None:
        raise ValueError(f"convention must be radiological or neurological, got {convention!r}")
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
    fig = Figure(figsize=(2.6 * len(zs), 3.4))
    axes = fig.subplots(1, len(zs))
    axes = np.atleast_1d(axes)
    lo, hi = np.percentile(image[image != 0], (1, 99)) if (image != 0).any() else (0, 1)
    aspect = zooms[1] / zooms[0]  # rows are y (mm per row), columns x: square millimetres
    for ax, z in zip(axes, zs):
        sl = preview_slice(image, z, convention)
        lab = preview_slice(labels, z, convention)
        rgba = np.zeros((*lab.shape, 4))
        for v in names:
            if v:
                rgba[lab == v, :3] = np.array(LABEL_COLOURS[v]) / 255
                rgba[lab == v, 3] = alpha
        ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
        ax.imshow(rgba, aspect=aspect)
        ax.set_title(f"axial z={z}", fontsize=8)
        for text, xy, ha, va in zip(letters, ((0.02, 0.5), (0.98, 0.5), (0.5, 0.98), (0.5, 0.02)),
                                    ("left", "right", "center", "center"), ("center", "center", "top", "bottom")):
            ax.text(*xy, text, transform=ax.transAxes, ha=ha, va=va, color="yellow", fontsize=9, fontweight="bold")
        ax.axis("off")
    handles = [Patch(color=np.array(LABEL_COLOURS[v]) / 255, label=f"{v}: {n}") for v, n in names.items() if v]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False, title=(
        "radiological convention: the patient's right on the image's left" if convention == "radiological"
        else "neurological convention: the patient's left on the image's left"), title_fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    return Path(path)
