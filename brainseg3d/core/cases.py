"""Find BraTS cases on disk, whatever release naming they use.

A *case* is one patient visit: four co-registered MRI volumes and, when present, a label map.
The internal modality order is fixed once, here, and used everywhere else (datalists, the
stacked 4-channel image, the 4D single-file input, the bundle metadata)::

    MODALITIES = ("t1", "t1ce", "t2", "flair")

============  ======================  =====================
internal      BraTS 2018-2021          BraTS 2023+
============  ======================  =====================
``t1``        ``*_t1.nii.gz``          ``*-t1n.nii.gz``
``t1ce``      ``*_t1ce.nii.gz``        ``*-t1c.nii.gz``
``t2``        ``*_t2.nii.gz``          ``*-t2w.nii.gz``
``flair``     ``*_flair.nii.gz``       ``*-t2f.nii.gz``
label         ``*_seg.nii.gz``         ``*-seg.nii.gz``
============  ======================  =====================

Suffixes match in any letter case (``-t2W``), with ``.nii`` or ``.nii.gz``, or the volume
formats 3D Slicer and ITK-SNAP save: NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``,
``.mhd``), read through ITK (:func:`load_image`) and converted to NIfTI before segmentation
(:func:`nifti_copy`); a 4D NRRD (four components) is a 4D case.
A single NIfTI file that carries no modality suffix is taken as a 4D case holding the four
modalities stacked in the order above (channel-last, as NIfTI stores it, or channel-first).

Example:
    >>> from brainseg3d.core.cases import discover
    >>> cases = discover("../shared/data/brats2018")
    >>> cases[0].case_id, cases[0].modality_files()[0].name
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np

__all__ = [
    "MODALITIES",
    "NIFTI_EXTENSIONS",
    "ITK_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "is_nifti",
    "load_image",
    "itk_ras_affine",
    "nifti_copy",
    "Case",
    "CaseError",
    "CaseInfo",
    "discover",
    "inspect_case",
    "split_name",
]

logger = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
LABEL = "label"

#: filename suffix (lower case) -> internal role
SUFFIXES: dict[str, str] = {
    "t1": "t1",
    "t1n": "t1",
    "t1w": "t1",
    "t1ce": "t1ce",
    "t1c": "t1ce",
    "t1gd": "t1ce",
    "t2": "t2",
    "t2w": "t2",
    "flair": "flair",
    "t2f": "flair",
    "seg": LABEL,
}

NIFTI_EXTENSIONS = (".nii.gz", ".nii")
#: other volume formats, read through ITK (3D Slicer saves NRRD; ITK-SNAP also MetaImage)
ITK_EXTENSIONS = (".nrrd", ".nhdr", ".mha", ".mhd")
#: every image file name ending discovery takes
IMAGE_EXTENSIONS = NIFTI_EXTENSIONS + ITK_EXTENSIONS
_SUFFIX_RE = re.compile(r"^(?P<case>.+?)[_\-.](?P<suffix>[A-Za-z0-9]+)$")
#: tolerance (mm, and for direction cosines) when comparing the grids of two volumes
GRID_ATOL = 1e-3


class CaseError(ValueError):
    """A case that cannot be used; the message names the case and the problem."""

    def __init__(self, case_id: str, problem: str):
        self.case_id = case_id
        self.problem = problem
        super().__init__(f"{case_id}: {problem}")


def _strip_nifti(name: str) -> str | None:
    """The file name without its image extension (:data:`IMAGE_EXTENSIONS`), or ``None``."""
    low = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return None


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether a file name ends in ``.nii`` or ``.nii.gz`` (any letter case)."""
    return str(path).lower().endswith(NIFTI_EXTENSIONS)


def itk_ras_affine(direction, spacing, origin) -> np.ndarray:
    """The NIfTI (RAS) affine of an ITK geometry (LPS; the first three axes of a 4D one)."""
    n = int(round(len(direction) ** 0.5))
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, np.float64).reshape(n, n)[:3, :3] * np.asarray(spacing[:3], np.float64)
    lps[:3, 3] = origin[:3]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def load_image(path: str | os.PathLike) -> nib.Nifti1Image:
    """Any image file of :data:`IMAGE_EXTENSIONS` as a NIfTI image (for NRRD / MetaImage: in
    memory, the array in x, y, z order and the RAS affine of the file's ITK geometry).

    NIfTI goes through nibabel; NRRD and MetaImage through MONAI's ``ITKReader``, or through
    SimpleITK for pixel types ITK's Python wrapping lacks (a 4-component NRRD, a 4D file):
    both give the same affine (ITK's LPS geometry turned to RAS).
    """
    if is_nifti(path):
        return nib.load(str(path))
    try:
        from monai.data import ITKReader

        reader = ITKReader(affine_lps_to_ras=True)
        array, meta = reader.get_data(reader.read(str(path)))
        affine = np.asarray(meta["affine"], np.float64)
    except Exception:  # noqa: BLE001 - ITK's Python wrapping lacks the pixel type / dimension: SimpleITK has them
        import SimpleITK as sitk

        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)  # scalar (z, y, x) or (t, z, y, x); vector (z, y, x, c)
        if img.GetNumberOfComponentsPerPixel() > 1:
            array = np.transpose(arr, (2, 1, 0, 3))
        else:
            array = np.transpose(arr, tuple(range(arr.ndim))[::-1])  # (x, y, z[, t])
        affine = itk_ras_affine(img.GetDirection(), img.GetSpacing(), img.GetOrigin())
    return nib.Nifti1Image(np.asarray(array), affine)


def nifti_copy(case: "Case", folder: str | os.PathLike) -> "Case":
    """The case with every NRRD / MetaImage file written as NIfTI into ``folder`` (same name
    stem, ``.nii.gz``; the same voxels and physical grid); NIfTI files are kept as they are."""
    folder = Path(folder)

    def convert(path: Path | None) -> Path | None:
        if path is None or is_nifti(path):
            return path
        folder.mkdir(parents=True, exist_ok=True)
        try:
            img = load_image(path)
        except Exception as e:  # noqa: BLE001 - ITK raises RuntimeError with its own text
            raise CaseError(case.case_id, f"unreadable file {path.name}: {str(e).splitlines()[0][:300]}") from e
        out = folder / f"{_strip_nifti(path.name)}.nii.gz"
        nib.save(img, str(out))
        return out

    return dataclasses.replace(case, images={m: convert(p) for m, p in case.images.items()}, image4d=convert(case.image4d),
                               label=convert(case.label))


def split_name(filename: str) -> tuple[str, str | None] | None:
    """Split a NIfTI filename into ``(case_id, role)``.

    Args:
        filename: a file name such as ``BraTS-GLI-00000-000-t2W.nii.gz``.

    Returns:
        ``(case_id, role)`` where role is one of :data:`MODALITIES`, ``"label"``, or ``None`` for
        a NIfTI file without a known modality suffix (a 4D candidate); ``None`` when the file is
        not NIfTI at all.
    """
    stem = _strip_nifti(filename)
    if stem is None:
        return None
    m = _SUFFIX_RE.match(stem)
    if m and m.group("suffix").lower() in SUFFIXES:
        return m.group("case"), SUFFIXES[m.group("suffix").lower()]
    return stem, None


@dataclasses.dataclass
class Case:
    """One case: the modality files (or one 4D file), an optional label, and any problem found.

    Attributes:
        case_id: the BraTS subject id (file prefix), used to name every output.
        images: internal modality name -> path, for the four-file layout.
        image4d: path of a single 4D NIfTI holding the four modalities, instead of ``images``.
        label: path of the label map, or ``None``.
        problems: structural problems found by discovery (missing or duplicate modality);
            :meth:`check` raises the first one.
        warnings: what discovery noticed but does not stop the case (a stray NIfTI file in
            the case folder, another case of the same id that was left out); they go into
            the case's report.
    """

    case_id: str
    images: dict[str, Path] = dataclasses.field(default_factory=dict)
    image4d: Path | None = None
    label: Path | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def location(self) -> str:
        """Where the case is on disk (its folder, or its 4D file)."""
        if self.image4d is not None:
            return str(self.image4d)
        files = [*self.images.values(), *([self.label] if self.label is not None else [])]
        return str(files[0].parent) if files else "?"

    def modality_files(self) -> list[Path]:
        """The image files in the fixed :data:`MODALITIES` order (one path for a 4D case)."""
        self.check()
        if self.image4d is not None:
            return [self.image4d]
        return [self.images[m] for m in MODALITIES]

    def check(self) -> None:
        """Raise :class:`CaseError` when discovery found a structural problem."""
        if self.problems:
            raise CaseError(self.case_id, "; ".join(self.problems))

    def to_datalist_item(self, root: str | os.PathLike | None = None) -> dict:
        """A MONAI datalist item ``{"case", "image", "label"}``; paths relative to ``root``."""

        def rel(p: Path) -> str:
            return os.path.relpath(p, root) if root is not None else str(p)

        item: dict = {"case": self.case_id, "image": [rel(p) for p in self.modality_files()]}
        if self.label is not None:
            item["label"] = rel(self.label)
        return item


@dataclasses.dataclass
class CaseInfo:
    """Header facts of a case, read without decoding voxel data.

    Attributes:
        problem: why the case cannot be segmented as it is (``None``: it can).
        warnings: what does not stop segmentation (an unreadable or off-grid label file: the
            label is not needed to segment, so it is ignored).
        label_ok: the label file is readable and on the modalities' grid.
    """

    case_id: str
    shape: tuple[int, ...] | None
    spacing: tuple[float, ...] | None
    same_grid: bool
    problem: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    label_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.problem is None


def _is_stray_of(stem: str, case_id: str) -> bool:
    return stem == case_id or (stem.startswith(case_id) and stem[len(case_id)] in "_-.")


def _holds_4_channels(f: Path) -> bool:
    try:
        channel_layout(load_image(f).shape)
    except Exception:  # a 3D volume, a damaged file: not a 4D case
        return False
    return True


def _group_files(files: Iterable[Path], check_singles: bool = False) -> list[Case]:
    """Group the NIfTI files of one folder into cases.

    A NIfTI file without a modality suffix beside a four-file case is a *stray* (a brain mask,
    a copy) when its name starts with that case's id, or, with ``check_singles``, when its
    header holds no 4-channel image: it goes into that case's warnings and is not a case.
    """
    groups: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    singles: list[Path] = []
    for f in files:
        parsed = split_name(f.name)
        if parsed is None:
            continue
        case_id, role = parsed
        if role is None:
            singles.append(f)
        else:
            groups[case_id][role].append(f)
    cases = []
    for case_id, roles in groups.items():
        case = Case(case_id)
        for role, paths in roles.items():
            if len(paths) > 1:
                names = ", ".join(sorted(p.name for p in paths))
                case.problems.append(f"two files for one modality '{role}': {names}")
            if role == LABEL:
                case.label = sorted(paths)[0]
            else:
                case.images[role] = sorted(paths)[0]
        missing = [m for m in MODALITIES if m not in case.images]
        if missing:
            case.problems.append(f"missing modality {', '.join(missing)}")
        cases.append(case)
    by_id = {c.case_id: c for c in cases}
    for f in singles:
        case_id = _strip_nifti(f.name) or f.name
        owner = next((c for cid, c in sorted(by_id.items(), key=lambda kv: -len(kv[0])) if _is_stray_of(case_id, cid)), None)
        if owner is None and len(by_id) == 1:
            owner = next(iter(by_id.values()))
        # e.g. "BraTS_x.nii.gz" or a brain mask "BraTS_x_mask.nii.gz" beside "BraTS_x_t1.nii.gz"
        stray = owner is not None and (case_id == owner.case_id or (check_singles and not _holds_4_channels(f)))
        if stray:
            msg = f"ignored {f.name}: not one of the four modalities nor the label (a brain mask or a copy?)"
            owner.warnings.append(msg)
            logger.warning("%s: %s", owner.case_id, msg)
            continue
        cases.append(Case(case_id, image4d=f))
    return cases


def _walk_dirs(folder: Path):
    """Every folder under ``folder`` (itself first, sorted, depth first) with its files.

    Folder links are followed, but each real folder is visited once: a link loop, or two links
    to one folder, cannot make discovery loop or find a case twice. Unreadable folders and
    broken links are skipped with a warning.
    """
    seen: set[str] = set()
    stack = [Path(folder)]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in seen:  # a link loop, or a second link to one folder
            logger.info("%s: a link to a folder already searched (%s); not searched again", d, real)
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            logger.warning("cannot list %s: %s; skipped", d, e.strerror or e)
            continue
        files, dirs = [], []
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=True):
                    dirs.append(Path(e.path))
                elif e.is_file(follow_symlinks=True):
                    files.append(Path(e.path))
            except OSError:  # a link loop or a broken link
                continue
        yield d, files
        stack.extend(reversed(dirs))


def _cases_in_dir(folder: Path) -> list[Case]:
    cases: list[Case] = []
    for _, files in _walk_dirs(folder):
        cases += _group_files(files, check_singles=True)
    return cases


def discover(root: str | os.PathLike | Sequence[str | os.PathLike], warnings: list[str] | None = None) -> list[Case]:
    """Find every case under ``root``.

    Args:
        root: one case folder, a folder of case folders (searched recursively), a single
            4D NIfTI file, a text file listing case folders / NIfTI files (one per line, ``#``
            comments allowed, relative paths resolved against the list file), or a sequence
            of any of these.
        warnings: a list the warnings are appended to (besides the log): two cases sharing
            one id (the first found is kept, the others are left out), stray files.

    Returns:
        Cases sorted by id. Cases with structural problems are included, with
        :attr:`Case.problems` set, so that a batch can report them by name; what does not stop
        a case is in :attr:`Case.warnings`.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    found: list[str] = []
    if isinstance(root, (list, tuple)):
        cases = [c for r in root for c in discover(r, found)]
    else:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"no such file or folder: {root}")
        if root.is_dir():
            cases = _cases_in_dir(root)
        elif split_name(root.name) is not None:
            cases = _group_files([root])
            if cases and cases[0].image4d is None:  # one modality file given alone
                cases = _group_files(sorted(root.parent.glob(_glob_prefix(cases[0].case_id))))
                cases = [c for c in cases if c.case_id == split_name(root.name)[0]]
        else:
            entries = [ln.strip() for ln in root.read_text().splitlines()]
            entries = [e for e in entries if e and not e.startswith("#")]
            cases = discover([(root.parent / e) for e in entries], found)
    seen: dict[str, Case] = {}
    for c in cases:
        first = seen.get(c.case_id)
        if first is not None:
            if os.path.realpath(first.location()) == os.path.realpath(c.location()):
                continue  # the same case listed twice
            msg = (f"{c.case_id}: two cases share this id: kept {first.location()}, left out {c.location()} "
                   f"(give each case its own id)")
            logger.warning("%s", msg)
            found.append(msg)
            first.warnings.append(f"another case with this id was left out: {c.location()}")
            continue
        seen[c.case_id] = c
        found += [f"{c.case_id}: {w}" for w in c.warnings if f"{c.case_id}: {w}" not in found]
    if warnings is not None:
        warnings += [w for w in found if w not in warnings]
    return sorted(seen.values(), key=lambda c: c.case_id)


def _glob_prefix(case_id: str) -> str:
    return "".join(f"[{ch}]" if ch in "[]*?" else ch for ch in case_id) + "*"


def _grid(img: nib.Nifti1Image) -> tuple[tuple[int, ...], np.ndarray]:
    return tuple(int(s) for s in img.shape[:3]), img.affine


def inspect_case(case: Case) -> CaseInfo:
    """Read the headers of a case and report its grid (no voxel data is decoded).

    The problem, when there is one, is one of: a structural problem from discovery, an
    unreadable file, a volume that is not 3D, a 4D file without 4 channels, or
    ``"modalities on different grids"`` (shape, spacing, direction or origin differ).

    The label is not needed to segment: an unreadable label file, or one on another grid, is
    a warning (:attr:`CaseInfo.warnings`, ``label_ok=False``), never the case's problem.
    """
    warnings: list[str] = []
    label_ok = case.label is not None

    def info(problem, shape=None, spacing=None, same=False):
        return CaseInfo(case.case_id, shape, spacing, same, problem, warnings, label_ok)

    if case.problems:
        return info("; ".join(case.problems))
    headers = {}
    for f in case.modality_files():
        try:
            headers[f] = load_image(f)
        except Exception as e:  # nibabel / ITK raise many types for damaged files
            return info(f"unreadable file {f.name}: {e}")
    if case.label is not None:
        try:
            headers[case.label] = load_image(case.label)
        except Exception as e:
            label_ok = False
            warnings.append(f"label file {case.label.name} is unreadable ({e}): ignored (not needed to segment)")
    if case.image4d is not None:
        img = headers[case.image4d]
        try:
            layout = channel_layout(img.shape)
        except ValueError as e:
            return info(f"{case.image4d.name}: {e}")
        shape = tuple(int(s) for s in (img.shape[:3] if layout == "last" else img.shape[1:4]))
        grids = [(shape, img.affine)]
    else:
        grids = []
        for f in case.modality_files():
            img = headers[f]
            if len(img.shape) != 3 and not (len(img.shape) > 3 and all(s == 1 for s in img.shape[3:])):
                return info(f"{f.name} is not a 3D volume (shape {tuple(img.shape)})")
            grids.append(_grid(img))
        shape = grids[0][0]
    spacing = tuple(float(s) for s in np.sqrt((grids[0][1][:3, :3] ** 2).sum(0)))

    def on(g):
        return g[0] == grids[0][0] and np.allclose(g[1], grids[0][1], atol=GRID_ATOL)

    same = all(on(g) for g in grids)
    problem = None if same else "modalities on different grids"
    if not same:
        roles = list(MODALITIES if case.image4d is None else ["image"])
        detail = ", ".join(f"{r} {g[0]}" for r, g in zip(roles, grids))
        problem = f"modalities on different grids ({detail})"
    if label_ok:
        lab = _grid(headers[case.label])
        if not on(lab):
            label_ok = False
            warnings.append(f"label file {case.label.name} is not on the modalities' grid (shape {lab[0]} vs {grids[0][0]}, "
                            f"or its affine differs): ignored (not needed to segment)")
    return info(problem, shape, spacing, same)


def channel_layout(shape: Sequence[int]) -> str:
    """Where the 4 modality channels sit in a 4D (or 5D ``X,Y,Z,1,4``) NIfTI shape.

    Returns:
        ``"last"`` for ``(X, Y, Z, 4)`` (NIfTI's own layout, as MONAI Label and ITK write it),
        ``"first"`` for ``(4, X, Y, Z)``.

    Raises:
        ValueError: the shape holds no 4-channel layout.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 5 and shape[3] == 1:
        shape = shape[:3] + shape[4:]
    if len(shape) == 4 and shape[3] == len(MODALITIES):
        return "last"
    if len(shape) == 4 and shape[0] == len(MODALITIES):
        return "first"
    if len(shape) == 3:
        raise ValueError(
            f"a single 3D volume {shape} carries one modality; name it with a modality suffix "
            f"(_t1, _t1ce, _t2, _flair) beside the other three, or stack all four in one 4D file"
        )
    raise ValueError(f"not a 4-channel volume (shape {shape}); expected (X, Y, Z, 4) or (4, X, Y, Z)")


def inference_items(root: str | os.PathLike) -> list[dict]:
    """MONAI dataset items ``{"case", "image"}`` for every usable case under ``root``.

    Used as the bundle's datalist, so ``python -m monai.bundle run`` segments a folder of
    cases in any BraTS naming. Cases with problems are skipped with a warning naming them.
    """
    items = []
    for case in discover(root):
        info = inspect_case(case)
        if not info.ok:
            logger.warning("skipping %s: %s", case.case_id, info.problem)
            continue
        for w in info.warnings:
            logger.warning("%s: %s", case.case_id, w)
        items.append({"case": case.case_id, "image": [str(p) for p in case.modality_files()]})
    return items


def case_name_formatter(metadict: dict, saver=None) -> dict:
    """``SaveImaged(output_name_formatter=...)``: name an output after its case id.

    ``.../BraTS2021_00006_t1.nii.gz`` -> ``BraTS2021_00006``, so that with ``output_postfix=""``
    the mask is written as ``<case id>.nii.gz``.
    """
    src = metadict.get("filename_or_obj", "case")
    if isinstance(src, (list, tuple)):
        src = src[0]
    parsed = split_name(Path(str(src)).name)
    return {"subject": parsed[0] if parsed else Path(str(src)).stem, "idx": None}
