"""DICOM input: four MR series (T1, T1ce, T2, FLAIR) of one case, converted to NIfTI.

A DICOM case is a folder holding the four series, in either layout:

* four sub-folders, one series each (``case/t1/*.dcm``, ``case/t1ce/*.dcm``, ...), or
* one folder holding all four series' files together (told apart by SeriesInstanceUID).

Series are found with GDCM (:class:`SimpleITK.ImageSeriesReader`) in the folder and every
sub-folder; files need no particular extension. Other series (localizers, diffusion, ...)
may be present: those that match no modality are ignored.

Matching rule: each series' SeriesDescription (DICOM tag ``0008|103e``) is lower-cased and
the **first** rule that matches wins, in this order:

=========  ===============================================================
``flair``  contains ``flair`` or ``t2f``
``t1ce``   contains ``t1ce``, ``t1c``, ``t1gd``, ``gd``, ``contrast``, ``post`` or ``+c``
``t2``     contains ``t2``
``t1``     contains ``t1``
=========  ===============================================================

So ``"AX T2 FLAIR"`` is FLAIR, ``"T1 POST GD"`` is T1ce, ``"AX T2 FSE"`` is T2, ``"SAG T1"``
is T1. When the description is empty (or matches no rule), the name of the folder holding
the series is used instead if it names a modality the way the NIfTI files do
(:data:`brainseg3d.core.cases.SUFFIXES`: ``t1``, ``t1n``, ``t1ce``, ``t1c``, ``t2``,
``t2w``, ``flair``, ``t2f``, ..., any letter case, alone or as a ``_``/``-``/``.`` suffix such
as ``BraTS-GLI-00000-000-t1c``).

Every modality must match exactly one series: no match, or two matching series, is a
:class:`~brainseg3d.core.cases.CaseError` naming the case and the series.

Example:
    >>> from brainseg3d.data.dicom import dicom_case_to_nifti, is_dicom_case
    >>> if is_dicom_case("patient42"):
    ...     case = dicom_case_to_nifti("patient42", "/tmp/nifti")  # a Case of 4 NIfTI files
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import SimpleITK as sitk

from brainseg3d.core.cases import LABEL, MODALITIES, NIFTI_EXTENSIONS, SUFFIXES, Case, CaseError

__all__ = [
    "DESCRIPTION_RULES",
    "find_dicom_series",
    "series_description",
    "match_modality",
    "match_series",
    "dicom_case_to_nifti",
    "is_dicom_case",
]

#: (modality, substrings of the lower-cased SeriesDescription); the first matching rule wins
DESCRIPTION_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("flair", ("flair", "t2f")),
    ("t1ce", ("t1ce", "t1c", "t1gd", "gd", "contrast", "post", "+c")),
    ("t2", ("t2",)),
    ("t1", ("t1",)),
)

_FOLDER_RE = re.compile(r"^(?:.+[_\-.])?(?P<suffix>[a-z0-9]+)$")
_SERIES_DESCRIPTION = "0008|103e"


def _walk_dirs(folder: Path):
    for dirpath, dirnames, _ in os.walk(folder):
        dirnames.sort()
        yield Path(dirpath)


def find_dicom_series(folder: str | os.PathLike) -> dict[str, list[str]]:
    """Find the DICOM series in ``folder`` and all its sub-folders.

    Args:
        folder: a folder (searched recursively).

    Returns:
        SeriesInstanceUID -> the series' file paths, in GDCM's slice order. A series split
        over several folders is merged (files from the first folder first).

    Raises:
        FileNotFoundError: ``folder`` is not an existing folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    series: dict[str, list[str]] = {}
    for d in _walk_dirs(folder):
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(d)) or ()
        for uid in ids:
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d), uid))
            if files:
                series.setdefault(uid, []).extend(files)
    return series


def series_description(files: list[str]) -> str:
    """The SeriesDescription (``0008|103e``) of a series' first file; ``""`` when absent."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files[0]))
    reader.LoadPrivateTagsOn()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    if reader.HasMetaDataKey(_SERIES_DESCRIPTION):
        return reader.GetMetaData(_SERIES_DESCRIPTION).strip()
    return ""


def match_modality(description: str, folder_name: str | None = None) -> str | None:
    """The modality a series is, from its description (or, failing that, its folder name).

    Args:
        description: the SeriesDescription; matched case-insensitively by
            :data:`DESCRIPTION_RULES`, first rule wins.
        folder_name: the name of the folder holding the series; used when the description is
            empty or matches no rule, if it names a modality (``t1ce``, ``t2w``,
            ``case-t2f``, ...).

    Returns:
        One of :data:`~brainseg3d.core.cases.MODALITIES`, or ``None``.
    """
    desc = (description or "").lower()
    for modality, keys in DESCRIPTION_RULES:
        if any(k in desc for k in keys):
            return modality
    if folder_name:
        m = _FOLDER_RE.match(folder_name.strip().lower())
        if m:
            role = SUFFIXES.get(m.group("suffix"))
            if role is not None and role != LABEL:
                return role
    return None


def match_series(folder: str | os.PathLike, case_id: str | None = None) -> dict[str, list[str]]:
    """Assign the DICOM series under ``folder`` to the four modalities.

    Args:
        folder: the case folder (either layout, see the module docstring).
        case_id: the name used in error messages; default: the folder's name.

    Returns:
        modality -> the series' files, for each of the four modalities.

    Raises:
        CaseError: no DICOM series found, a modality with no matching series, or two series
            matching one modality (the message lists the series descriptions and folders).
    """
    folder = Path(folder)
    case_id = case_id or folder.resolve().name
    if not folder.is_dir():
        raise CaseError(case_id, f"not a folder: {folder}")
    series = find_dicom_series(folder)
    if not series:
        raise CaseError(case_id, f"no DICOM series found in {folder}")
    matches: dict[str, list[tuple[str, str, list[str]]]] = {m: [] for m in MODALITIES}
    unmatched = []
    for uid, files in series.items():
        desc = series_description(files)
        parent = Path(files[0]).parent
        folder_name = parent.name if parent.resolve() != folder.resolve() else None
        where = os.path.relpath(parent, folder)
        label = f"'{desc}' in {where}" if desc else f"(no description) in {where}"
        modality = match_modality(desc, folder_name)
        if modality is None:
            unmatched.append(label)
        else:
            matches[modality].append((uid, label, files))
    problems = []
    for m in MODALITIES:
        if len(matches[m]) > 1:
            names = "; ".join(label for _, label, _ in matches[m])
            problems.append(f"two series match modality {m}: {names}")
    missing = [m for m in MODALITIES if not matches[m]]
    if missing:
        seen = "; ".join(unmatched) if unmatched else "none"
        problems.append(
            f"no DICOM series matches modality {', '.join(missing)} (series that matched no "
            f"modality: {seen}); SeriesDescription must contain e.g. 'T1', 'T1 post', 'T2', "
            f"'FLAIR', or the series folder be named t1, t1ce, t2, flair"
        )
    if problems:
        raise CaseError(case_id, "; ".join(problems))
    return {m: matches[m][0][2] for m in MODALITIES}


def _read_series(files: list[str], case_id: str, modality: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        where = Path(files[0]).parent
        raise CaseError(case_id, f"cannot read the {modality} DICOM series ({where}): {msg}") from e
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(
            case_id, f"the {modality} DICOM series is not a 3D scalar volume (size {img.GetSize()})"
        )
    return img


def dicom_case_to_nifti(
    folder: str | os.PathLike, workdir: str | os.PathLike, case_id: str | None = None
) -> Case:
    """Convert a DICOM case (four series) to ``<workdir>/<case_id>_{t1,t1ce,t2,flair}.nii.gz``.

    Each series is read with SimpleITK (GDCM: slices sorted by position, rescale
    slope/intercept applied, geometry from ImagePositionPatient / ImageOrientationPatient /
    PixelSpacing) and written as NIfTI, keeping its voxel type and physical grid. The four
    series may be on different grids: check with
    :func:`brainseg3d.core.cases.inspect_case` and register with
    :func:`brainseg3d.preprocessing.registration.register_case` when they are.

    Args:
        folder: the DICOM case folder (either layout, see the module docstring).
        workdir: output folder (created). Use one per case.
        case_id: the output name prefix; default: the folder's name.

    Returns:
        The :class:`~brainseg3d.core.cases.Case` of the four written files.

    Raises:
        CaseError: no DICOM series found, a modality with no or with two matching series, an
            unreadable series.
    """
    folder = Path(folder)
    case_id = case_id or folder.resolve().name
    files = match_series(folder, case_id)
    workdir = Path(workdir)
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    try:
        for m in MODALITIES:
            img = _read_series(files[m], case_id, m)
            out = workdir / f"{case_id}_{m}.nii.gz"
            tmp = workdir / f".{case_id}_{m}.{uuid.uuid4().hex[:8]}.tmp.nii.gz"
            try:
                sitk.WriteImage(img, str(tmp), True)
                os.replace(tmp, out)
            finally:
                if tmp.exists():
                    tmp.unlink()
            images[m] = out
    except BaseException:
        # a failed conversion leaves nothing behind: neither its files nor an empty folder
        for f in images.values():
            f.unlink(missing_ok=True)
        if created:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Case(case_id, images=images)


def is_dicom_case(path: str | os.PathLike) -> bool:
    """True for a folder that holds DICOM series (in it or its sub-folders) and no NIfTI file.

    Args:
        path: any path.

    Returns:
        ``False`` for files, missing paths, folders holding any ``.nii``/``.nii.gz`` file, and
        folders without a DICOM series.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    dirs = list(_walk_dirs(path))
    for d in dirs:
        for name in os.listdir(d):
            if name.lower().endswith(NIFTI_EXTENSIONS):
                return False
    return any(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(d)) for d in dirs)
