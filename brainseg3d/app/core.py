"""Pure helpers of the web demo (no Streamlit import): upload checks, overlay rendering, tables.

Everything here works on plain Python / NumPy / nibabel objects so that it is unit-tested
without a browser or a Streamlit server (``tests/test_app.py``).

Display convention: volumes are put in the closest RAS orientation (``nib.as_closest_canonical``)
and every view is drawn with ``np.rot90`` as :func:`brainseg3d.io.write_preview` does:
superior / anterior up, the patient's left on the image's left (neurological convention).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import nibabel as nib
import numpy as np

from brainseg3d.core.cases import MODALITIES, Case, channel_layout, inspect_case, load_image, split_name
from brainseg3d.core.components import LabelToRegions
from brainseg3d.core.labels import LABEL_COLOURS, LABEL_NAMES, REGION_NAMES, REGIONS, VIEWS
from brainseg3d.io import save_label_image, write_colour_table

__all__ = [
    "DISCLAIMER",
    "MAX_UPLOAD_MB",
    "FP_COLOUR",
    "FN_COLOUR",
    "UNCERTAINTY_COLOUR",
    "quality_rows",
    "assignment_rows",
    "without_paths",
    "VIEWS",
    "UploadPlan",
    "classify_uploads",
    "write_uploads",
    "case_problem",
    "case_key",
    "find_bundles",
    "display_modalities",
    "display_labels",
    "to_uint8",
    "slice_view",
    "view_letters",
    "CONVENTIONS",
    "render_overlay",
    "default_slices",
    "legend_items",
    "legend_html",
    "volume_rows",
    "score_rows",
    "error_counts",
    "error_masks",
    "REGION_NAMES",
    "NIIVUE_COLORMAPS",
    "niivue_available",
    "nifti_bytes",
    "niivue_background",
    "niivue_layers",
    "mask_bytes",
    "colour_table_bytes",
    "report_bytes",
]

DISCLAIMER = "Research use only. Not a medical device."
#: cap on one upload (all files together), in MB; also Streamlit's per-file server.maxUploadSize
MAX_UPLOAD_MB = 200
#: error overlay (per region): false positives (predicted, not in the ground truth) and false negatives
FP_COLOUR = (255, 0, 255)
FN_COLOUR = (0, 140, 255)
#: the uncertainty overlay's colour (yellow: apart from the label colours)
UNCERTAINTY_COLOUR = (255, 230, 0)
#: how each modality may be named (BraTS 2018-2021 / 2023+), for messages
MODALITY_HINTS = {"t1": "_t1 or -t1n", "t1ce": "_t1ce or -t1c", "t2": "_t2 or -t2w", "flair": "_flair or -t2f"}
MODALITY_TITLES = {"t1": "T1", "t1ce": "T1c", "t2": "T2", "flair": "FLAIR"}
REGION_TITLES = {
    "necrotic_core_ml": "necrotic tumour core (label 1)",
    "edema_ml": "peritumoral edema (label 2)",
    "enhancing_tumour_ml": "enhancing tumour (ET)",
    "tumour_core_ml": "tumour core (TC = 1 + ET)",
    "whole_tumour_ml": "whole tumour (WT = 1 + 2 + ET)",
}


# --------------------------------------------------------------------------------------------
# uploads
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class UploadPlan:
    """What a set of uploaded file names makes: a case, or the reasons it does not."""

    case_id: str | None = None
    images: dict[str, str] = dataclasses.field(default_factory=dict)  # modality -> file name
    image4d: str | None = None
    label: str | None = None
    errors: list[str] = dataclasses.field(default_factory=list)
    total_mb: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def files(self) -> list[str]:
        """The file names the case uses (images first, then the label)."""
        names = [self.images[m] for m in MODALITIES if m in self.images]
        names += [self.image4d] if self.image4d else []
        names += [self.label] if self.label else []
        return names


def _base(name: str) -> str:
    """The bare file name (browsers send one; anything with folders in it is cut to its last part)."""
    return Path(str(name).replace("\\", "/")).name


def classify_uploads(files: Sequence[tuple[str, int]], max_total_mb: float = MAX_UPLOAD_MB) -> UploadPlan:
    """Sort uploaded files into a case by their BraTS names (:func:`split_name`).

    Args:
        files: ``(file name, size in bytes)`` of each upload.
        max_total_mb: cap on all files together.

    Returns:
        An :class:`UploadPlan`; ``plan.errors`` holds one clear message per problem (not NIfTI,
        missing or doubled modality, files of two cases, a 4D file mixed with modality files,
        too large).
    """
    plan = UploadPlan()
    files = list(dict.fromkeys((_base(n), int(s)) for n, s in files))  # the same file dropped twice counts once
    if not files:
        plan.errors.append("No files uploaded: upload the four MRI modalities (T1, T1c, T2, FLAIR) of one case, or one 4D NIfTI.")
        return plan
    total = sum(int(s) for _, s in files)
    plan.total_mb = total / 1e6
    if total > max_total_mb * 1e6:
        plan.errors.append(f"Upload too large: {total / 1e6:.0f} MB in all, over the {max_total_mb:g} MB limit.")
    roles: dict[str, list[tuple[str, str]]] = {}
    singles: list[str] = []
    labels: list[tuple[str, str]] = []
    for name, size in files:
        name = _base(name)
        parsed = split_name(name)
        if parsed is None:
            plan.errors.append(f"{name} is not an image file: expected .nii or .nii.gz files (BraTS names such as CASE_t1.nii.gz), "
                               "or NRRD / MetaImage volumes (.nrrd, .mha) named the same way.")
            continue
        if int(size) == 0:
            plan.errors.append(f"{name} is empty (0 bytes).")
            continue
        case_id, role = parsed
        if role is None:
            singles.append(name)
        elif role == "label":
            labels.append((case_id, name))
        else:
            roles.setdefault(role, []).append((case_id, name))
    for role, items in roles.items():
        if len(items) > 1:
            names = sorted(n for _, n in items)
            what = f"{names[0]} twice, with different contents" if len(set(names)) == 1 else ", ".join(names)
            plan.errors.append(f"Two files for modality {MODALITY_TITLES[role]}: {what}; upload one case at a time.")
    if len(labels) > 1:
        names = sorted(n for _, n in labels)
        what = f"{names[0]} twice, with different contents" if len(set(names)) == 1 else ", ".join(names)
        plan.errors.append(f"Two ground-truth files: {what}; upload at most one.")
    if singles and roles:
        plan.errors.append(
            f"{', '.join(singles)} has no modality suffix ({', '.join(MODALITY_HINTS.values())}): "
            "upload either the four modality files or one 4D NIfTI, not both."
        )
    elif len(singles) > 1:
        plan.errors.append(
            f"{len(singles)} files without a modality suffix ({', '.join(sorted(singles))}): name each "
            f"with its modality ({', '.join(f'{m}: {h}' for m, h in MODALITY_HINTS.items())}), or upload one 4D NIfTI."
        )
    elif singles:
        plan.image4d = singles[0]
        plan.case_id = split_name(singles[0])[0]
    elif roles or labels:
        missing = [m for m in MODALITIES if m not in roles]
        if missing:
            plan.errors.append(
                "Missing modality "
                + ", ".join(f"{MODALITY_TITLES[m]} (a file named CASE{MODALITY_HINTS[m].split(' or ')[0]}.nii.gz or CASE{MODALITY_HINTS[m].split(' or ')[1]}.nii.gz)" for m in missing)
                + ": all four of T1, T1c, T2 and FLAIR are needed."
            )
    if roles:
        ids = sorted({cid for items in roles.values() for cid, _ in items})
        if len(ids) > 1:
            plan.errors.append(f"Files of more than one case ({', '.join(ids)}): upload one case at a time.")
        plan.case_id = ids[0]
        plan.images = {r: items[0][1] for r, items in roles.items()}
    if labels:
        plan.label = labels[0][1]
        if plan.case_id is not None and labels[0][0] != plan.case_id:
            plan.errors.append(f"The ground truth {labels[0][1]} names case {labels[0][0]}, the images case {plan.case_id}.")
    return plan


def write_uploads(files: Mapping[str, bytes], plan: UploadPlan, folder: str | os.PathLike) -> Case:
    """Write the planned uploads into ``folder`` (the session's temporary folder) and make a Case.

    Only the bare file names the plan accepted are written, so nothing lands outside ``folder``.
    """
    if not plan.ok:
        raise ValueError("; ".join(plan.errors))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {_base(k): v for k, v in files.items()}
    paths: dict[str, Path] = {}
    for name in plan.files():
        path = (folder / name).resolve()
        if path.parent != folder.resolve():
            raise ValueError(f"refusing to write {name!r} outside the upload folder")
        path.write_bytes(data[name])
        paths[name] = path
    case = Case(plan.case_id or "case")
    if plan.image4d:
        case.image4d = paths[plan.image4d]
    else:
        case.images = {m: paths[n] for m, n in plan.images.items()}
    if plan.label:
        case.label = paths[plan.label]
    return case


def case_problem(case: Case) -> str | None:
    """A clear message when the case cannot be segmented as uploaded (``inspect_case``), else None."""
    info = inspect_case(case)
    if info.ok:
        return None
    p = info.problem
    if p.startswith("modalities on different grids"):
        return (
            f"The files are not on one voxel grid: {p[len('modalities on different grids'):].strip(' ()')}. "
            "The four modalities (and the ground truth) must be co-registered, with the same shape and affine; "
            "`brainseg3d segment --register auto` registers raw scans on the command line."
        )
    if p.startswith("unreadable file"):
        return f"Cannot read {p[len('unreadable file '):]} (is it really a NIfTI file?)"
    return f"Cannot use this case: {p}"


def case_key(parts: Iterable[tuple[str, bytes]]) -> str:
    """A stable hash of ``(role, content)`` pairs (the file names do not matter)."""
    h = hashlib.sha256()
    for role, data in sorted(parts, key=lambda p: p[0]):
        h.update(role.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:20]


def find_bundles(root: str | os.PathLike, extra: str | None = None) -> list[Path]:
    """Bundle folders (``configs/inference.json`` + ``models/model.pt``): those under ``root``,
    then the folders listed in ``extra`` (``os.pathsep``-separated, e.g. ``$BRAINSEG3D_BUNDLES``;
    a listed folder may itself hold bundles)."""

    def is_bundle(p: Path) -> bool:
        return (p / "configs" / "inference.json").is_file() and (p / "models" / "model.pt").is_file()

    found: list[Path] = []
    candidates: list[Path] = []
    root = Path(root)
    if root.is_dir():
        candidates += sorted(p for p in root.iterdir() if p.is_dir())
    for entry in (extra or "").split(os.pathsep):
        entry = entry.strip()
        if not entry:
            continue
        p = Path(entry).expanduser()
        if is_bundle(p):
            candidates.append(p)
        elif p.is_dir():
            candidates += sorted(q for q in p.iterdir() if q.is_dir())
    for p in candidates:
        p = p.resolve()
        if is_bundle(p) and p not in found:
            found.append(p)
    return found


# --------------------------------------------------------------------------------------------
# volumes for display
# --------------------------------------------------------------------------------------------


def to_uint8(volume: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Window a volume to 0-255 on the percentiles of its non-zero voxels (brain)."""
    v = np.asarray(volume, dtype=np.float32)
    nz = v[v != 0]
    if nz.size == 0:
        return np.zeros(v.shape, np.uint8)
    sample = nz[:: max(1, nz.size // 200_000)]
    lo, hi = np.percentile(sample, (lo_pct, hi_pct))
    if hi <= lo:
        hi = lo + 1
    return np.clip((v - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    can = nib.as_closest_canonical(img)
    return np.asanyarray(can.dataobj), tuple(float(z) for z in can.header.get_zooms()[:3])


def _channel(img: nib.Nifti1Image, i: int) -> np.ndarray:
    """Channel ``i`` of a 4D image (channel-last, a 5D (X, Y, Z, 1, 4) file, or channel-first), float32."""
    arr = np.asanyarray(img.dataobj)
    if channel_layout(arr.shape) == "last":
        return np.asarray(arr.reshape(arr.shape[:3] + (-1,))[..., i], np.float32)
    return np.asarray(arr.reshape((arr.shape[0],) + arr.shape[1:4])[i], np.float32)


def display_modalities(case: Case) -> tuple[dict[str, np.ndarray], tuple[float, float, float]]:
    """Each modality as a uint8 RAS volume (for the viewer's background), and the voxel size."""
    out: dict[str, np.ndarray] = {}
    zooms = (1.0, 1.0, 1.0)
    if case.image4d is not None:
        img = load_image(case.image4d)
        for i, m in enumerate(MODALITIES):
            vol, zooms = _canonical(nib.Nifti1Image(_channel(img, i), img.affine))
            out[m] = to_uint8(vol)
    else:
        for m in MODALITIES:
            vol, zooms = _canonical(load_image(case.images[m]))
            out[m] = to_uint8(np.squeeze(vol))
    return out, zooms


def display_labels(img: nib.Nifti1Image) -> np.ndarray:
    """A label image as a uint8 RAS volume on the display grid."""
    vol, _ = _canonical(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.uint8), img.affine))
    return np.asarray(np.squeeze(vol), np.uint8)


#: display conventions: ``radiological`` (3D Slicer, ITK-SNAP: the patient's right on the
#: screen's left in axial and coronal views) and ``neurological``
CONVENTIONS = ("radiological", "neurological")


def view_letters(view: str, convention: str = "radiological") -> tuple[str, str, str, str]:
    """Orientation letters at the (left, right, top, bottom) edges of a displayed view."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if view == "sagittal":
        return ("P", "A", "S", "I")
    side = ("R", "L") if convention == "radiological" else ("L", "R")
    return (*side, "A", "P") if view == "axial" else (*side, "S", "I")


def slice_view(volume: np.ndarray, view: str, index: int, convention: str = "radiological") -> np.ndarray:
    """One 2D slice of a RAS volume, oriented for display: superior / anterior up; in axial and
    coronal views the patient's right on the left (``radiological``) or on the right
    (``neurological``); sagittal views have anterior on the right."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    axis = VIEWS[view]
    index = int(np.clip(index, 0, volume.shape[axis] - 1))
    sl = np.rot90(np.take(volume, index, axis=axis))  # columns: x (the patient's left to right) or y
    return sl[:, ::-1] if convention == "radiological" and view != "sagittal" else sl


def _draw_letters(rgb: np.ndarray, letters: Sequence[str]) -> np.ndarray:
    """Write the orientation letters at the middle of each edge (yellow, as Slicer's)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    h, w = rgb.shape[:2]
    size = max(12, min(h, w) // 14)
    try:
        from PIL import ImageFont

        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = None
    pad = max(2, size // 3)
    for text, (x, y, anchor) in zip(letters, ((pad, h / 2, "lm"), (w - pad, h / 2, "rm"), (w / 2, pad, "mt"), (w / 2, h - pad, "mb"))):
        draw.text((x, y), text, fill=(255, 230, 0), font=font, anchor=anchor if font is not None else None,
                  stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(img)


def _pixel_mm(view: str, zooms: Sequence[float]) -> tuple[float, float]:
    """(row mm, column mm) of a displayed slice."""
    in_plane = [a for a in (0, 1, 2) if a != VIEWS[view]]  # (first, second) axis of the slice
    return float(zooms[in_plane[1]]), float(zooms[in_plane[0]])  # rot90: rows <- second axis


def render_overlay(
    background: np.ndarray,
    labels: np.ndarray | None,
    view: str,
    index: int,
    opacity: float = 0.45,
    mode: str = "labels",
    ground_truth: np.ndarray | None = None,
    zooms: Sequence[float] = (1.0, 1.0, 1.0),
    min_size: int = 320,
    uncertainty: np.ndarray | None = None,
    convention: str = "radiological",
    letters: bool = True,
    region: str = "WT",
) -> np.ndarray:
    """An RGB uint8 slice: grey background with the label map (Slicer colours) or, in
    ``mode="errors"``, the false positives (:data:`FP_COLOUR`) and false negatives
    (:data:`FN_COLOUR`) of one BraTS ``region`` (WT, TC or ET) against ``ground_truth``, or in ``mode="uncertainty"`` the per-voxel
    uncertainty map (0-100, :attr:`Prediction.uncertainty`) in :data:`UNCERTAINTY_COLOUR`, its
    opacity growing with the uncertainty.

    Pixels are made square (voxel size ``zooms``) and small slices are enlarged to ``min_size``
    by pixel repetition (nearest neighbour: labels stay crisp). ``convention``: see
    :func:`slice_view`; ``letters`` writes the orientation letters on the edges.
    """
    def at(volume):  # every layer: this view, slice and convention
        return slice_view(volume, view, index, convention)

    grey = at(background).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    a = float(np.clip(opacity, 0.0, 1.0))
    if labels is not None:
        lab = at(labels)
        if mode == "errors":
            if ground_truth is None:
                raise ValueError("the error overlay needs a ground truth")
            fp, fn = error_masks(lab, at(ground_truth), region)
            layers = [(fp, FP_COLOUR), (fn, FN_COLOUR)]
        elif mode == "labels":
            layers = [(lab == v, LABEL_COLOURS[v]) for v in sorted(LABEL_COLOURS)]
        elif mode == "uncertainty":
            if uncertainty is None:
                raise ValueError("the uncertainty overlay needs the uncertainty map")
            layers = []
            w = (a * at(uncertainty).astype(np.float32) / 100.0)[..., None]
            rgb = (1 - w) * rgb + w * np.asarray(UNCERTAINTY_COLOUR, np.float32)
        else:
            raise ValueError(f"mode must be 'labels', 'errors' or 'uncertainty', got {mode!r}")
        for mask, colour in layers:
            if mask.any():
                rgb[mask] = (1 - a) * rgb[mask] + a * np.asarray(colour, np.float32)
    out = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    row_mm, col_mm = _pixel_mm(view, zooms)
    if abs(row_mm - col_mm) > 0.01 * min(row_mm, col_mm):
        h = max(1, int(round(out.shape[0] * row_mm / col_mm)))
        out = out[np.minimum((np.arange(h) * out.shape[0]) // h, out.shape[0] - 1)]
    k = int(np.ceil(min_size / max(out.shape[:2]))) if max(out.shape[:2]) < min_size else 1
    if k > 1:
        out = np.repeat(np.repeat(out, k, axis=0), k, axis=1)
    if letters:
        out = _draw_letters(np.ascontiguousarray(out), view_letters(view, convention))
    return np.ascontiguousarray(out)


def default_slices(labels: np.ndarray | None, shape: Sequence[int]) -> dict[str, int]:
    """The slice of each view through the tumour's centre of mass (the volume's centre if none)."""
    centre = [s // 2 for s in shape[:3]]
    if labels is not None and labels.any():
        idx = np.nonzero(labels)
        centre = [int(np.round(np.mean(i))) for i in idx]
    return {v: int(centre[a]) for v, a in VIEWS.items()}


# --------------------------------------------------------------------------------------------
# legend, tables, downloads
# --------------------------------------------------------------------------------------------


def legend_items(mode: str = "labels", labels_scheme: str = "brats", region: str = "WT") -> list[tuple[str, tuple[int, int, int]]]:
    """``(text, colour)`` entries of the overlay legend."""
    if mode == "errors":
        name = REGION_NAMES[region]
        return [(f"false positive (predicted {name}, not in the ground truth)", FP_COLOUR), (f"false negative (missed {name})", FN_COLOUR)]
    if mode == "uncertainty":
        return [("uncertain voxels (the brighter, the closer to a coin flip)", UNCERTAINTY_COLOUR)]
    return [(f"{v}: {name}", LABEL_COLOURS[v]) for v, name in LABEL_NAMES[labels_scheme].items() if v]


def legend_html(mode: str = "labels", labels_scheme: str = "brats", region: str = "WT") -> str:
    """The legend as inline HTML (coloured squares)."""
    spans = [
        f'<span style="display:inline-block;margin-right:1.2em;white-space:nowrap">'
        f'<span style="display:inline-block;width:0.9em;height:0.9em;margin-right:0.35em;vertical-align:middle;'
        f'background:rgb{tuple(c)};border:1px solid #555"></span>{text}</span>'
        for text, c in legend_items(mode, labels_scheme, region)
    ]
    return '<div class="brainseg3d-legend">' + "".join(spans) + "</div>"


def volume_rows(report: Mapping) -> list[dict]:
    """Per-region volume table rows (``region``, ``volume (ml)`` as text, 2 decimals) from a prediction report."""
    vols = report.get("volumes", {})
    return [{"region": REGION_TITLES.get(k, k), "volume (ml)": f"{float(v):.2f}"} for k, v in vols.items()]


def assignment_rows(case: Case) -> list[dict]:
    """Which uploaded file was taken as which modality (and as the ground truth)."""
    if case.image4d is not None:
        rows = [{"modality": "T1, T1c, T2, FLAIR (4D, in this order)", "file": case.image4d.name}]
    else:
        rows = [{"modality": MODALITY_TITLES[m], "file": case.images[m].name} for m in MODALITY_TITLES if m in case.images]
    if case.label is not None:
        rows.append({"modality": "ground truth", "file": case.label.name})
    return rows


def without_paths(message: str, root: str | os.PathLike) -> str:
    """``message`` with every path under ``root`` (the server's session folder) cut to its file name."""
    import re

    root = str(root).rstrip("/")
    return re.sub(re.escape(root) + r"/[^\s'\"),;:]*", lambda m: Path(m.group(0)).name, message)


def quality_rows(report: Mapping) -> list[dict]:
    """Rows ``region, predicted Dice, members agree`` (as text) from a report's ``quality`` block."""
    q = report.get("quality") or {}
    names = REGION_NAMES
    agree = q.get("member_agreement") or {}
    return [
        {"region": names[r], "predicted Dice": f"{float(q['predicted_dice'][r]):.2f}",
         **({"members agree (Dice)": f"{float(agree[r]):.2f}"} if r in agree else {})}
        for r in ("WT", "TC", "ET")
        if r in q.get("predicted_dice", {})
    ]


def score_rows(scores: Mapping[str, float]) -> list[dict]:
    """Rows ``region, Dice, HD95 (mm)`` (as text) from :func:`brainseg3d.evaluation.metrics.region_scores`."""
    names = REGION_NAMES
    return [
        {"region": names[r], "Dice": f"{float(scores[f'Dice_{r}']):.3f}", "HD95 (mm)": f"{float(scores[f'HD95_{r}']):.1f}"}
        for r in ("WT", "TC", "ET")
        if f"Dice_{r}" in scores
    ]


def error_masks(pred: np.ndarray, gt: np.ndarray, region: str = "WT") -> tuple[np.ndarray, np.ndarray]:
    """``(false positives, false negatives)`` of one BraTS region (WT, TC or ET), as boolean arrays.

    Both label maps may use either scheme (ET = 4 up to BraTS 2021, 3 from 2023): the regions
    come from :class:`brainseg3d.preprocessing.transforms.LabelToRegions`, as the evaluation's do.
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    i = REGIONS.index(region)
    conv = LabelToRegions("auto")
    p = conv(np.ascontiguousarray(pred), "prediction")[i].numpy().astype(bool)
    g = conv(np.ascontiguousarray(gt), "ground truth")[i].numpy().astype(bool)
    return p & ~g, g & ~p


def error_counts(pred: np.ndarray, gt: np.ndarray, voxel_ml: float = 0.001, region: str = "WT") -> dict[str, float]:
    """False positive / false negative volumes of one region (default whole tumour), in ml."""
    fp, fn = error_masks(pred, gt, region)
    return {"false_positive_ml": round(float(fp.sum()) * voxel_ml, 3), "false_negative_ml": round(float(fn.sum()) * voxel_ml, 3)}


# --------------------------------------------------------------------------------------------
# the interactive viewer (NiiVue, through the niivue-streamlit component)
# --------------------------------------------------------------------------------------------

#: NiiVue colour maps of the overlays: each label / error layer is one 0/1 volume whose 1 takes
#: the map's top colour, close to :data:`LABEL_COLOURS`, :data:`FP_COLOUR`, :data:`FN_COLOUR`
NIIVUE_COLORMAPS = {1: "red", 2: "green", 3: "redyell", 4: "redyell", "fp": "violet", "fn": "blue", "uncertainty": "warm"}


def niivue_available() -> bool:
    """Whether the NiiVue Streamlit component (``pip install niivue-streamlit``) is installed."""
    import importlib.util

    return importlib.util.find_spec("niivue_component") is not None


def nifti_bytes(volume: np.ndarray, affine: np.ndarray) -> bytes:
    """``volume`` as gzipped NIfTI-1 bytes (what NiiVue reads), with ``affine`` as both qform and sform."""
    import gzip

    img = nib.Nifti1Image(np.asarray(volume), np.asarray(affine, np.float64))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=1)


def niivue_background(case: Case, modality: str) -> tuple[bytes, str]:
    """``(bytes, file name)`` of one modality at its own intensities (NiiVue windows it and the
    user adjusts window / level): the uploaded file itself (NIfTI, NRRD or MetaImage: NiiVue
    reads all three), or that channel of a 4D file."""
    if case.image4d is None:
        path = Path(case.images[modality])
        return path.read_bytes(), path.name
    img = load_image(case.image4d)
    return nifti_bytes(_channel(img, MODALITIES.index(modality)), img.affine), f"{case.case_id}_{modality}.nii.gz"


def niivue_layers(
    labels: np.ndarray,
    affine: np.ndarray,
    mode: str = "labels",
    ground_truth: np.ndarray | None = None,
    region: str = "WT",
    uncertainty: np.ndarray | None = None,
    opacity: float = 0.45,
) -> list[dict]:
    """The overlays of the NiiVue viewer (``niivue_viewer(overlays=...)``) for one display mode.

    ``labels`` (and ``ground_truth``, ``uncertainty``) are arrays on one grid with ``affine``
    (NiiVue places them in world space, so they need not be the background's grid). Each label
    value, or each error kind of ``region``, is its own 0/1 layer in :data:`NIIVUE_COLORMAPS`;
    layers that are empty are left out.
    """
    lab = np.asarray(labels)
    if mode == "labels":
        parts = [(f"label_{v}", lab == v, NIIVUE_COLORMAPS[v]) for v in sorted(LABEL_COLOURS)]
    elif mode == "errors":
        if ground_truth is None:
            raise ValueError("the error overlay needs a ground truth")
        fp, fn = error_masks(lab, ground_truth, region)
        parts = [(f"{region}_false_positive", fp, NIIVUE_COLORMAPS["fp"]), (f"{region}_false_negative", fn, NIIVUE_COLORMAPS["fn"])]
    elif mode == "uncertainty":
        if uncertainty is None:
            raise ValueError("the uncertainty overlay needs the uncertainty map")
        parts = [("uncertainty", np.asarray(uncertainty), NIIVUE_COLORMAPS["uncertainty"])]
    else:
        raise ValueError(f"mode must be 'labels', 'errors' or 'uncertainty', got {mode!r}")
    return [
        {"data": nifti_bytes(np.asarray(mask, np.uint8), affine), "name": f"{name}.nii.gz", "colormap": cmap, "opacity": float(opacity)}
        for name, mask, cmap in parts
        if np.any(mask)
    ]


def mask_bytes(label: nib.Nifti1Image, folder: str | os.PathLike, name: str = "mask.nii.gz") -> bytes:
    """The mask as .nii.gz bytes (uint8, on the input grid), written via ``save_label_image``."""
    path = save_label_image(label, Path(folder) / name)
    return path.read_bytes()


def colour_table_bytes(folder: str | os.PathLike, labels_scheme: str = "brats") -> bytes:
    """The 3D Slicer colour table (.ctbl) as bytes."""
    return write_colour_table(Path(folder) / f"brats_colours_{labels_scheme}.ctbl", labels_scheme).read_bytes()


def report_bytes(report: Mapping) -> bytes:
    return (json.dumps(report, indent=2, default=str) + "\n").encode()
