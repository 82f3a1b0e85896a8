"""Preparing a case for the network (nnU-Net's first stage): read it (NRRD / MetaImage through
ITK), check it, register modalities on different grids, strip the skull of raw scans, run the
preprocessing chain. :meth:`Predictor.load <brainseg3d.inference.predictor.Predictor.load>`
is :func:`prepare_case`.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
import nibabel as nib
import numpy as np
import torch
from brainseg3d.core.cases import Case, CaseError, channel_layout, inspect_case, is_nifti, nifti_copy
from brainseg3d.core.checks import check_headers, check_network_size
from brainseg3d.io import make_workdir

__all__ = ["LoadedCase", "prepare_case", "preprocess_case", "strip_case_skull", "fills_brain_box"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadedCase:
    """A case read and preprocessed, ready for the network (see :meth:`Predictor.load`)."""

    case_id: str
    data: dict
    chain: object
    reference: nib.Nifti1Image  # header image of the grid the mask is written on
    registration: object | None = None  # RegisteredCase when the modalities were registered
    workdir: str | None = None
    seconds: float = 0.0
    files: list | None = None
    skull_strip: dict | None = None  # brain extraction report (skullstrip.strip_case)
    looks_stripped: bool = True  # the (final) input fills < 90 % of its brain box (fills_brain_box)
    estimate: dict | None = None  # quality features and uncertainty map (Predictor.predict_loaded)
    warnings: list = dataclasses.field(default_factory=list)  # input checks / discovery: into the report
    grid_file: Path | None = None  # the user's file (any format) whose grid the mask is on



def prepare_case(predictor, case: Case) -> LoadedCase:
    """Read and preprocess a case (registering its modalities first when needed).

    Raises:
        CaseError: naming the case and the problem (missing modality, unreadable file,
            different grids with ``register="never"``, NaN values, ...).
    """
    t0 = time.perf_counter()
    original, reg, workdir = case, None, None
    if not all(is_nifti(f) for f in [*case.images.values(), case.image4d, case.label] if f is not None):
        workdir = str(make_workdir(predictor.workdir_root, case.case_id))  # NRRD / MetaImage: read through ITK into NIfTI
        try:
            case = nifti_copy(case, Path(workdir) / "input_nifti")
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    info = inspect_case(case)
    warnings = [*case.warnings, *info.warnings]
    for w in info.warnings:
        logger.warning("%s: %s", case.case_id, w)
    if case.label is not None and not info.label_ok:  # not needed to segment: never registered or read
        case = dataclasses.replace(case, label=None)
    if not case.problems and (info.ok or info.problem.startswith("modalities on different grids")):
        check_headers(case)  # singular affine, mirrored header: before any registration
    grids_differ = info.problem is not None and info.problem.startswith("modalities on different grids")
    if case.image4d is None and ((grids_differ and predictor.register == "auto") or (predictor.register == "always" and not case.problems)):
        from brainseg3d.preprocessing.registration import register_case

        workdir = workdir or str(make_workdir(predictor.workdir_root, case.case_id))
        try:
            reg = register_case(case, workdir)
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        logger.info("%s: registered to %s: %s", case.case_id, reg.reference, reg.report.get("summary", ""))
        case, info = reg.case, inspect_case(reg.case)
    if not info.ok:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        raise CaseError(case.case_id, info.problem)
    files = case.modality_files()
    grid_file = (original.images.get(reg.reference) if reg is not None else original.modality_files()[0])
    reference = nib.load(str(files[0]))
    channel_dim = None
    if case.image4d is not None and channel_layout(reference.shape) == "first":
        channel_dim = 0
        reference = nib.Nifti1Image(np.zeros(reference.shape[1:4], np.uint8), reference.affine, None)
    elif case.image4d is not None:
        reference = nib.Nifti1Image(np.zeros(reference.shape[:3], np.uint8), reference.affine, reference.header.copy())
    chain = predictor.chain(channel_dim)
    try:
        data = preprocess_case(predictor, chain, case, files)
        warnings += data.pop("input_warnings", [])
        box_full = fills_brain_box(data["image"])
        # brain extraction only for inputs that do not look skull-stripped: registered raw
        # scans (checked during registration) or a preprocessed image whose brain box is full
        if predictor.skull_strip == "never":
            looks, strip_report = True, {"applied": False, "reason": "skull_strip=never"}
        else:
            looks = reg.report["skull_stripped"]["looks_stripped"] if reg is not None else not box_full
            strip_report = {"applied": False, "reason": "input looks skull-stripped"}
        if not looks:
            stripped, strip_report, workdir = strip_case_skull(predictor, case, reg, workdir)
            if stripped is not None:
                data = preprocess_case(predictor, chain, case, stripped.modality_files())
                box_full = fills_brain_box(data["image"])  # of the stripped input
    except Exception:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)  # load() fails: nobody else cleans it up
        raise
    return LoadedCase(case.case_id, data, chain, reference, reg, workdir, time.perf_counter() - t0, files, strip_report,
                      looks_stripped=not box_full, warnings=warnings, grid_file=grid_file)


def preprocess_case(predictor, chain, case: Case, files) -> dict:
    try:
        data = chain({"image": [str(f) for f in files] if case.image4d is None else str(files[0]), "case": case.case_id})
    except Exception as e:
        check = _case_error(e)
        if check is not None:  # an input check (brainseg3d.core.checks): its own message
            raise check from e
        raise CaseError(case.case_id, f"cannot read or preprocess: {_root_cause(e)}") from e
    img = data["image"]
    if img.shape[0] != 4:
        raise CaseError(case.case_id, f"expected 4 modality channels, got {img.shape[0]}")
    if not torch.isfinite(img).all():
        raise CaseError(case.case_id, "image holds NaN or infinite values")
    check_network_size(img.shape[1:], case.case_id)
    return data


def strip_case_skull(predictor, case: Case, reg, workdir: str | None):
    """Brain extraction when ``skull_strip="auto"`` and the input does not look skull-stripped.

    Returns ``(stripped case or None, report, workdir)``; the stripped files go to
    ``<workdir>/skullstrip/`` and the mask to ``<workdir>/brain_mask.nii.gz`` (a new
    temporary workdir when there was none; removed by :meth:`segment_loaded`).
    """
    if predictor.skull_strip == "never":
        return None, {"applied": False, "reason": "skull_strip=never"}, workdir
    if case.image4d is not None:
        return None, {"applied": False, "reason": "a 4D single-file input is not checked or stripped"}, workdir
    from brainseg3d.preprocessing.registration import looks_skull_stripped

    if reg is not None:
        looks, why = reg.report["skull_stripped"]["looks_stripped"], reg.report["skull_stripped"]["reason"]
    else:
        looks, why = looks_skull_stripped(case.images["t1ce" if "t1ce" in case.images else "flair"])
    if looks:  # the reference file's own check overrules the quick one on the brain box
        return None, {"applied": False, "reason": why}, workdir
    from brainseg3d.preprocessing.skullstrip import strip_case

    workdir = workdir or str(make_workdir(predictor.workdir_root, case.case_id))
    result = strip_case(case, Path(workdir) / "skullstrip", mask_path=Path(workdir) / "brain_mask.nii.gz")
    logger.info("%s: skull-stripped, brain mask %.0f ml", case.case_id, result.report["brain_ml"])
    return result.case, {**result.report, "reason": why}, workdir



def fills_brain_box(image: torch.Tensor, max_fill: float = 0.9) -> bool:
    """A cheap gate on the preprocessed image, not the skull-strip decision: skull-stripped
    BraTS brains fill ~50-70 % of their bounding box (exact zeros outside), a raw scan's noise
    and skull nearly all of it. Only when it does is the one rule,
    :func:`brainseg3d.preprocessing.registration.looks_skull_stripped` on the input file, asked
    (:func:`strip_case_skull`)."""
    fill = float((image != 0).any(0).float().mean())
    return fill >= max_fill


def _case_error(e: BaseException) -> CaseError | None:
    """The :class:`CaseError` an input check raised inside a transform chain (MONAI wraps it)."""
    while e is not None:
        if isinstance(e, CaseError):
            return e
        e = e.__cause__
    return None


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {e}"
