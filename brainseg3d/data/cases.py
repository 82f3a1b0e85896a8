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

Suffixes match in any letter case (``-t2W``), with ``.nii`` or ``.nii.gz``.
A single NIfTI file that carries no modality suffix is taken as a 4D case holding the four
modalities stacked in the order above (channel-last, as NIfTI stores it, or channel-first).

Example:
    >>> from brainseg3d.data.cases import discover
    >>> cases = discover("../shared/data/brats2018")
    >>> cases[0].case_id, cases[0].modality_files()[0].name
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np

__all__ = [
    "MODALITIES",
    "Case",
    "CaseError",
    "CaseInfo",
    "discover",
    "inspect_case",
    "split_name",
]

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
    low = name.lower()
    for ext in NIFTI_EXTENSIONS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return None


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
    """

    case_id: str
    images: dict[str, Path] = dataclasses.field(default_factory=dict)
    image4d: Path | None = None
    label: Path | None = None
    problems: list[str] = dataclasses.field(default_factory=list)

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
    """Header facts of a case, read without decoding voxel data."""

    case_id: str
    shape: tuple[int, ...] | None
    spacing: tuple[float, ...] | None
    same_grid: bool
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _group_files(files: Iterable[Path]) -> list[Case]:
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
    for f in singles:
        case_id = _strip_nifti(f.name) or f.name
        if case_id in groups:  # e.g. "BraTS_x.nii.gz" beside "BraTS_x_t1.nii.gz": not a case of its own
            continue
        cases.append(Case(case_id, image4d=f))
    return cases


def _cases_in_dir(folder: Path) -> list[Case]:
    cases: list[Case] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        cases += _group_files(Path(dirpath) / n for n in sorted(filenames))
    return cases


def discover(root: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Case]:
    """Find every case under ``root``.

    Args:
        root: one case folder, a folder of case folders (searched recursively), a single
            4D NIfTI file, a text file listing case folders / NIfTI files (one per line, ``#``
            comments allowed, relative paths resolved against the list file), or a sequence
            of any of these.

    Returns:
        Cases sorted by id. Cases with structural problems are included, with
        :attr:`Case.problems` set, so that a batch can report them by name.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        CaseError: two cases share one id.
    """
    if isinstance(root, (list, tuple)):
        cases = [c for r in root for c in discover(r)]
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
            cases = discover([(root.parent / e) for e in entries])
    seen: dict[str, Case] = {}
    for c in cases:
        if c.case_id in seen:
            raise CaseError(c.case_id, "two cases share this id (give each case its own folder)")
        seen[c.case_id] = c
    return sorted(cases, key=lambda c: c.case_id)


def _glob_prefix(case_id: str) -> str:
    return "".join(f"[{ch}]" if ch in "[]*?" else ch for ch in case_id) + "*"


def _grid(img: nib.Nifti1Image) -> tuple[tuple[int, ...], np.ndarray]:
    return tuple(int(s) for s in img.shape[:3]), img.affine


def inspect_case(case: Case) -> CaseInfo:
    """Read the headers of a case and report its grid (no voxel data is decoded).

    The problem, when there is one, is one of: a structural problem from discovery, an
    unreadable file, a volume that is not 3D, a 4D file without 4 channels, or
    ``"modalities on different grids"`` (shape, spacing, direction or origin differ).
    """

    def info(problem, shape=None, spacing=None, same=False):
        return CaseInfo(case.case_id, shape, spacing, same, problem)

    if case.problems:
        return info("; ".join(case.problems))
    headers = {}
    files = case.modality_files() + ([case.label] if case.label is not None else [])
    for f in files:
        try:
            headers[f] = nib.load(str(f))
        except Exception as e:  # nibabel raises many types for damaged files
            return info(f"unreadable file {f.name}: {e}")
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
    if case.label is not None:
        grids.append(_grid(headers[case.label]))
    spacing = tuple(float(s) for s in np.sqrt((grids[0][1][:3, :3] ** 2).sum(0)))
    same = all(g[0] == grids[0][0] and np.allclose(g[1], grids[0][1], atol=GRID_ATOL) for g in grids)
    problem = None if same else "modalities on different grids"
    if not same:
        roles = list(MODALITIES if case.image4d is None else ["image"]) + ["label"]
        detail = ", ".join(f"{r} {g[0]}" for r, g in zip(roles, grids))
        problem = f"modalities on different grids ({detail})"
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
    import logging

    items = []
    for case in discover(root):
        info = inspect_case(case)
        if not info.ok:
            logging.getLogger(__name__).warning("skipping %s: %s", case.case_id, info.problem)
            continue
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
