"""Bring the four modalities of a case onto one grid: rigid registration and resampling.

BraTS images are distributed co-registered, skull-stripped and resampled to one 1 mm grid.
Raw clinical scans are not: each sequence has its own field of view, orientation and slice
thickness (e.g. TCGA: T1/T1ce 256x224x26, T2 224x256x26, FLAIR 208x256x26, ~0.9x0.9x5.5 mm),
and the patient may move between sequences. :func:`register_case` fixes that:

1. a *reference* modality is chosen (:func:`choose_reference`: ``t1ce``, else ``flair``);
2. every other modality is rigidly registered to it with SimpleITK (Mattes mutual
   information, :class:`SimpleITK.Euler3DTransform`, 3-level multi-resolution, regular step
   gradient descent, a fixed random seed so that the result is deterministic). The start is
   the better (by mutual information) of the scanner-header alignment and
   ``CenteredTransformInitializer(GEOMETRY)``; a result that does not improve on the header
   alignment is rejected (the header alignment is kept and reported);
3. all four (the reference included) are resampled with linear interpolation onto one
   isotropic grid (1 mm by default) that covers the reference's physical extent in the
   reference's direction, and written as ``<workdir>/<case_id>_{t1,t1ce,t2,flair}.nii.gz``,
   which :func:`brainseg3d.core.cases.discover` finds as one case on one grid.

After segmentation on that grid, :func:`resample_to_reference` puts the mask back on the
reference modality's original grid (nearest neighbour), with the reference file's exact
shape and affine.

:func:`looks_skull_stripped` is a cheap check to *warn* when an input still has its skull
(the models are trained on skull-stripped BraTS images).

Example:
    >>> from brainseg3d.core.cases import discover
    >>> from brainseg3d.preprocessing.registration import register_case, resample_to_reference
    >>> case = discover("../shared/data/formats/TCGA-FG-6692_raw")[0]
    >>> reg = register_case(case, "/tmp/reg")          # reg.case is on one 1 mm grid
    >>> # ... segment reg.case, write mask.nii.gz on the 1 mm grid ...
    >>> resample_to_reference("mask.nii.gz", reg.reference_path, "TCGA-FG-6692_seg.nii.gz")
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from brainseg3d.core.cases import MODALITIES, Case, CaseError
from brainseg3d.io import atomic_path
from brainseg3d.preprocessing.sitk_io import as_3d, itk_error_text, same_grid, write_atomic

__all__ = [
    "RegisteredCase",
    "choose_reference",
    "register_case",
    "resample_to_reference",
    "looks_skull_stripped",
    "mean_displacement_mm",
    "needs_registration",
]

#: preferred reference modalities, in order (the final mask goes on this modality's grid)
REFERENCE_ORDER: tuple[str, ...] = ("t1ce", "flair")
#: seed of the random metric sampling: registration is deterministic
SEED = 20240611
#: fraction of voxels sampled by the metric during optimisation
SAMPLING = 0.15
#: multi-resolution schedule: shrink factors and Gaussian smoothing sigmas (mm)
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_MM = (4.0, 2.0, 0.0)
#: a registration whose mutual information is not at least this much above the header
#: alignment's is rejected (the header alignment is kept)
MIN_GAIN = 0.0


@dataclasses.dataclass
class RegisteredCase:
    """The result of :func:`register_case`.

    Attributes:
        case: the new case: four NIfTI files on one isotropic grid in ``workdir``.
        reference: the reference modality name (``"t1ce"`` or ``"flair"``).
        reference_path: the reference modality's original file: the grid on which the final
            mask must be written (:func:`resample_to_reference`).
        mi_before: modality -> Mattes mutual information with the reference (nats, higher is
            better) with the images aligned by their headers only (the unregistered start).
        mi_after: modality -> the same metric, same voxel samples, after registration.
        transforms: modality -> rigid transform mapping reference (fixed) physical points to
            that modality's (moving) physical points, ITK convention (identity for the
            reference and for rejected registrations).
        report: a JSON-serialisable summary (per modality: source grid, metric before/after,
            rotation in degrees, translation in mm, mean displacement, time; the new grid;
            the skull-stripping check of the reference).
    """

    case: Case
    reference: str
    reference_path: Path
    mi_before: dict[str, float]
    mi_after: dict[str, float]
    transforms: dict[str, sitk.Euler3DTransform]
    report: dict


# --------------------------------------------------------------------------------------- I/O


def _read(case: Case, modality: str, pixel_type=sitk.sitkFloat32) -> sitk.Image:
    path = case.images.get(modality)
    if path is None:
        raise CaseError(case.case_id, f"missing modality {modality}")
    try:
        img = sitk.ReadImage(str(path))
    except Exception as e:  # SimpleITK raises RuntimeError with a long ITK message
        raise CaseError(case.case_id, f"cannot read {modality} ({Path(path).name}): {itk_error_text(e)}") from e
    img = _as_3d(img, case.case_id, f"{modality} ({Path(path).name})")
    return img if pixel_type is None else sitk.Cast(img, pixel_type)


def _as_3d(img: sitk.Image, case_id: str, what: str) -> sitk.Image:
    try:
        return as_3d(img, what)
    except ValueError as e:
        raise CaseError(case_id, str(e)) from e


# ---------------------------------------------------------------------------- public helpers


def _readable(path: Path | None) -> bool:
    if path is None:
        return False
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return True
    except Exception:
        return False


def choose_reference(case: Case) -> str:
    """The modality whose grid the others are registered to: ``t1ce``, else ``flair``.

    The contrast-enhanced T1 is usually the sharpest, thinnest-slice sequence and the one the
    enhancing tumour is read on; FLAIR is the fallback.

    Args:
        case: a four-file case.

    Returns:
        ``"t1ce"`` when its file is present and its header readable, else ``"flair"``.

    Raises:
        CaseError: neither ``t1ce`` nor ``flair`` is present and readable.
    """
    for m in REFERENCE_ORDER:
        if _readable(case.images.get(m)):
            return m
    raise CaseError(case.case_id, "no readable reference modality (t1ce or flair) for registration")


def needs_registration(case: Case) -> bool:
    """True when the four modality files of ``case`` are not all on one grid (header check).

    This is the test behind ``--register auto``. A 4D single-file case is on one grid by
    construction. Structural problems (missing modality, unreadable file) are left to the
    caller: :func:`brainseg3d.core.cases.inspect_case` reports them.
    """
    from brainseg3d.core.cases import inspect_case

    if case.image4d is not None or case.problems:
        return False
    info = inspect_case(case)
    return info.problem is not None and info.problem.startswith("modalities on different grids")


def looks_skull_stripped(image: str | os.PathLike | sitk.Image) -> tuple[bool, str]:
    """Cheap guess whether a volume is skull-stripped (BraTS-like) or a raw scan.

    Skull-stripped BraTS volumes hold *exact* zeros everywhere outside the brain: the outer
    faces of the volume are (almost) all zero and zeros are a large part of the volume
    (~80 % for BraTS). Raw scans have skull, scalp and background noise: few exact zeros.
    The rule: at least 90 % of the voxels on the six outer faces and at least 30 % of all
    voxels are exactly zero. A raw scan whose background the scanner masked to zero can
    fool it (the skull is still there); use the answer to warn, not to fail.

    Args:
        image: a NIfTI (or any SimpleITK-readable) path, or a :class:`SimpleITK.Image`.

    Returns:
        ``(looks_stripped, reason)``, the reason a short human-readable sentence with the
        numbers behind the answer.

    Raises:
        RuntimeError: the file cannot be read (SimpleITK's error).
    """
    img = sitk.ReadImage(str(image)) if not isinstance(image, sitk.Image) else image
    if img.GetNumberOfComponentsPerPixel() > 1:  # a vector image: look at the first component
        img = sitk.VectorIndexSelectionCast(img, 0)
    a = sitk.GetArrayFromImage(img)
    while a.ndim > 3:  # a 4D file: look at the first volume
        a = a[0]
    if a.ndim != 3 or min(a.shape) < 2:
        return False, f"not a 3D volume (shape {a.shape}); cannot tell"
    faces = np.concatenate(
        [f.ravel() for f in (a[0], a[-1], a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1])]
    )
    face_zero = float((faces == 0).mean())
    zero = float((a == 0).mean())
    numbers = f"{face_zero:.0%} of the border and {zero:.0%} of all voxels are exactly 0"
    if face_zero >= 0.9 and zero >= 0.3:
        return True, f"background is exact zero ({numbers}): looks skull-stripped"
    return False, (
        f"background is not exact zero ({numbers}): looks like a raw scan with skull or "
        f"background noise; the models expect skull-stripped (BraTS-like) images"
    )


# ------------------------------------------------------------------------------ registration


def _euler_params(t: sitk.Euler3DTransform) -> dict:
    p = t.GetParameters()
    return {
        "rotation_deg": [round(math.degrees(v), 4) for v in p[:3]],
        "translation_mm": [round(v, 4) for v in p[3:]],
        "center_mm": [round(v, 4) for v in t.GetCenter()],
        "parameters": [float(v) for v in p],
        "fixed_parameters": [float(v) for v in t.GetFixedParameters()],
    }


def _rotation_angle_deg(t: sitk.Euler3DTransform) -> float:
    r = np.array(t.GetMatrix()).reshape(3, 3)
    return float(math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def _foreground_points(img: sitk.Image, max_points: int = 20000) -> np.ndarray:
    """Physical points (N, 3) of the voxels above the image's mean intensity, subsampled."""
    a = sitk.GetArrayFromImage(img)
    idx = np.argwhere(a > a.mean())[:, ::-1]  # (z, y, x) -> (x, y, z)
    if len(idx) == 0:
        idx = np.argwhere(np.ones_like(a, bool))[:, ::-1]
    if len(idx) > max_points:
        idx = idx[np.linspace(0, len(idx) - 1, max_points).astype(int)]
    d = np.array(img.GetDirection()).reshape(3, 3)
    return (idx * np.array(img.GetSpacing())) @ d.T + np.array(img.GetOrigin())


def mean_displacement_mm(t: sitk.Transform, points: np.ndarray) -> float:
    """Mean distance (mm) a transform moves ``points`` (N, 3 physical points, LPS)."""
    moved = np.array([t.TransformPoint(tuple(float(c) for c in p)) for p in points])
    return float(np.linalg.norm(moved - points, axis=1).mean())


def _metric_evaluator(seed: int) -> sitk.ImageRegistrationMethod:
    ev = sitk.ImageRegistrationMethod()
    ev.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    ev.SetMetricSamplingStrategy(ev.REGULAR)
    ev.SetMetricSamplingPercentage(0.25, seed)
    ev.SetInterpolator(sitk.sitkLinear)
    return ev


def _mi(ev: sitk.ImageRegistrationMethod, fixed, moving, transform) -> float:
    ev.SetInitialTransform(sitk.Euler3DTransform(transform), inPlace=False)
    return -float(ev.MetricEvaluate(fixed, moving))  # ITK minimises -MI


def _register_pair(fixed: sitk.Image, moving: sitk.Image, seed: int) -> tuple[sitk.Euler3DTransform, dict]:
    """Rigidly register ``moving`` to ``fixed``; returns the transform and a report."""
    t0 = time.perf_counter()
    ev = _metric_evaluator(seed)
    header = sitk.Euler3DTransform()
    size = np.array(fixed.GetSize(), float)
    header.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint(tuple((size - 1) / 2)))
    geometry = sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
        )
    )
    mi_header = _mi(ev, fixed, moving, header)
    mi_geometry = _mi(ev, fixed, moving, geometry)
    start, start_name = (header, "header") if mi_header >= mi_geometry else (geometry, "geometry")

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(SAMPLING, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=100,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    reg.SetSmoothingSigmasPerLevel(list(SMOOTHING_MM))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    result = sitk.Euler3DTransform(start)
    reg.SetInitialTransform(result, inPlace=True)
    reg.Execute(fixed, moving)
    mi_result = _mi(ev, fixed, moving, result)
    accepted = mi_result > mi_header + MIN_GAIN
    final = result if accepted else header
    mi_after = mi_result if accepted else mi_header
    info = {
        "mi_before": round(mi_header, 6),
        "mi_after": round(mi_after, 6),
        "mi_geometry_start": round(mi_geometry, 6),
        "start": start_name,
        "accepted": bool(accepted),
        "iterations": int(reg.GetOptimizerIteration()),
        "stop": reg.GetOptimizerStopConditionDescription(),
        "rotation_angle_deg": round(_rotation_angle_deg(final), 4),
        **_euler_params(final),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return final, info


def _iso_grid(ref: sitk.Image, spacing: float) -> dict:
    """A grid of ``spacing`` mm covering ``ref``'s physical extent, in ``ref``'s direction."""
    ref_spacing = np.array(ref.GetSpacing(), float)
    extent = np.array(ref.GetSize(), float) * ref_spacing  # voxel edge to voxel edge
    size = [max(1, int(math.ceil(e / spacing - 1e-6))) for e in extent]
    d = np.array(ref.GetDirection()).reshape(3, 3)
    corner = np.array(ref.GetOrigin()) - d @ (ref_spacing / 2)  # outer corner of voxel 0
    origin = corner + d @ np.full(3, spacing / 2)
    return {
        "size": size,
        "spacing": [float(spacing)] * 3,
        "origin": [float(v) for v in origin],
        "direction": [float(v) for v in ref.GetDirection()],
    }


def _resample(img: sitk.Image, grid: dict, transform: sitk.Transform, interpolator) -> sitk.Image:
    return sitk.Resample(
        img,
        grid["size"],
        transform,
        interpolator,
        grid["origin"],
        grid["spacing"],
        grid["direction"],
        0.0,
        sitk.sitkFloat32,
    )


def _output_type(original: sitk.Image) -> int:
    """int16 for integer sources whose range fits, float32 otherwise."""
    if original.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        return sitk.sitkFloat32
    mm = sitk.MinimumMaximumImageFilter()
    mm.Execute(original)
    return sitk.sitkInt16 if -32768 <= mm.GetMinimum() and mm.GetMaximum() <= 32767 else sitk.sitkFloat32


def register_case(
    case: Case,
    workdir: str | os.PathLike,
    reference: str | None = None,
    spacing: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> RegisteredCase:
    """Register a case's modalities to one reference and resample all four onto one grid.

    Every non-reference modality is rigidly registered to the reference (see the module
    docstring for the method), then the four are resampled (linear, 0 outside) onto one
    ``spacing`` mm isotropic grid covering the reference's extent in the reference's
    direction and written to ``<workdir>/<case_id>_{t1,t1ce,t2,flair}.nii.gz`` (int16 when
    the source is integer and fits, else float32; each written atomically). A label file, if
    the case has one, is resampled with nearest neighbour to ``<case_id>_seg.nii.gz``.

    Args:
        case: a four-file case (:func:`brainseg3d.core.cases.discover`); its modalities may
            be on different grids.
        workdir: output folder (created). Use one folder per case: :func:`discover` on it
            then finds exactly this case.
        reference: the reference modality; ``None``: :func:`choose_reference`.
        spacing: isotropic voxel size of the output grid, mm.
        progress: called with a short message before each step (e.g. ``print``).

    Returns:
        A :class:`RegisteredCase`; ``.case`` is on one grid, ``.reference_path`` is where the
        final mask's grid comes from.

    Raises:
        CaseError: the case has a structural problem or is a 4D single file, a modality is
            unreadable or not 3D, ``reference`` is not a modality, or a registration fails.
    """
    say = progress or (lambda msg: None)
    case.check()
    if case.image4d is not None:
        raise CaseError(
            case.case_id, "registration needs four modality files; a 4D file is already on one grid"
        )
    if reference is None:
        reference = choose_reference(case)
    if reference not in MODALITIES:
        raise CaseError(
            case.case_id, f"unknown reference modality {reference!r}; use one of {', '.join(MODALITIES)}"
        )
    if not spacing or spacing <= 0:
        raise ValueError(f"spacing must be a positive number of mm, got {spacing!r}")
    t_start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    originals = {m: _read(case, m, pixel_type=None) for m in MODALITIES}
    images = {m: sitk.Cast(img, sitk.sitkFloat32) for m, img in originals.items()}
    fixed = images[reference]
    points = _foreground_points(fixed)
    stripped, stripped_reason = looks_skull_stripped(originals[reference])

    transforms: dict[str, sitk.Euler3DTransform] = {reference: sitk.Euler3DTransform()}
    mi_before: dict[str, float] = {}
    mi_after: dict[str, float] = {}
    per_mod: dict[str, dict] = {}
    moving_names = [m for m in MODALITIES if m != reference]
    for i, m in enumerate(moving_names, 1):
        say(f"{case.case_id}: registering {m} to {reference} ({i}/{len(moving_names)})")
        try:
            t, info = _register_pair(fixed, images[m], SEED)
        except Exception as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise CaseError(case.case_id, f"registration of {m} to {reference} failed: {msg}") from e
        transforms[m] = t
        mi_before[m], mi_after[m] = info["mi_before"], info["mi_after"]
        info["mean_displacement_mm"] = round(mean_displacement_mm(t, points), 4)
        info["same_grid_as_reference"] = same_grid(images[m], fixed)
        per_mod[m] = info

    grid = _iso_grid(fixed, spacing)
    say(f"{case.case_id}: resampling to a {spacing:g} mm grid {tuple(grid['size'])}")
    out: dict[str, Path] = {}
    for m in MODALITIES:
        res = _resample(images[m], grid, transforms[m], sitk.sitkLinear)
        out_type = _output_type(originals[m])
        if out_type != sitk.sitkFloat32:
            res = sitk.Cast(sitk.Round(res), out_type)
        out[m] = workdir / f"{case.case_id}_{m}.nii.gz"
        write_atomic(res, out[m])
    label_out = None
    if case.label is not None:
        try:
            lab = sitk.ReadImage(str(case.label))
        except Exception as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise CaseError(case.case_id, f"cannot read label ({case.label.name}): {msg}") from e
        lab = _as_3d(lab, case.case_id, f"label ({case.label.name})")
        lab_res = sitk.Resample(
            lab, grid["size"], sitk.Transform(), sitk.sitkNearestNeighbor, grid["origin"], grid["spacing"],
            grid["direction"], 0, sitk.sitkUInt8,
        )
        label_out = workdir / f"{case.case_id}_seg.nii.gz"
        write_atomic(lab_res, label_out)

    for m in MODALITIES:
        src = originals[m]
        entry = per_mod.setdefault(m, {"reference": True})
        entry.update(
            {
                "source": str(case.images[m]),
                "source_size": list(src.GetSize()),
                "source_spacing": [round(v, 6) for v in src.GetSpacing()],
                "output": str(out[m]),
            }
        )
    report = {
        "case": case.case_id,
        "reference": reference,
        "reference_file": str(case.images[reference]),
        "method": "rigid (Euler3D), Mattes mutual information, 3-level regular step gradient descent",
        "grid": grid,
        "modalities": per_mod,
        "label": str(label_out) if label_out else None,
        "skull_stripped": {"looks_stripped": stripped, "reason": stripped_reason},
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    new_case = Case(case.case_id, images=out, label=label_out)
    return RegisteredCase(
        case=new_case,
        reference=reference,
        reference_path=Path(case.images[reference]),
        mi_before=mi_before,
        mi_after=mi_after,
        transforms=transforms,
        report=report,
    )


# ---------------------------------------------------------------------------- back to source


def resample_to_reference(
    mask: str | os.PathLike | sitk.Image,
    reference_path: str | os.PathLike,
    out_path: str | os.PathLike,
) -> Path:
    """Put a label mask back on the reference modality's original grid.

    The mask (on the registered grid, or any grid: the mapping is by physical position) is
    resampled with nearest neighbour (0 outside) onto the grid of ``reference_path`` and
    written as uint8 with the reference file's own header: exactly its shape and affine.
    The file appears atomically (a temporary file in the same folder, then ``os.replace``).

    Args:
        mask: path of the mask NIfTI, or a :class:`SimpleITK.Image` (3D, or 4D with one
            channel).
        reference_path: the reference modality's original file
            (:attr:`RegisteredCase.reference_path`).
        out_path: the output ``.nii.gz`` (or ``.nii``) path; its folder must exist.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        RuntimeError: a file cannot be read (SimpleITK's error).
        ValueError: the mask is not a 3D volume.
    """
    out_path = Path(out_path)
    img = sitk.ReadImage(str(mask)) if not isinstance(mask, sitk.Image) else mask
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = sitk.Extract(img, list(img.GetSize()[:3]) + [0], [0, 0, 0, 0])
    if img.GetDimension() != 3:
        raise ValueError(f"mask is not a 3D volume (size {img.GetSize()})")
    ref_sitk = sitk.ReadImage(str(reference_path))
    if ref_sitk.GetDimension() == 4 and ref_sitk.GetSize()[3] == 1:
        ref_sitk = sitk.Extract(ref_sitk, list(ref_sitk.GetSize()[:3]) + [0], [0, 0, 0, 0])
    res = sitk.Resample(
        sitk.Cast(img, sitk.sitkUInt8) if img.GetPixelID() != sitk.sitkUInt8 else img,
        ref_sitk,
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        0,
        sitk.sitkUInt8,
    )
    data = sitk.GetArrayFromImage(res).transpose(2, 1, 0)  # (z, y, x) -> NIfTI (x, y, z)
    ref = nib.load(str(reference_path))
    if data.shape != tuple(ref.shape) and data.size == int(np.prod(ref.shape)):
        data = data.reshape(ref.shape)  # e.g. a reference stored as (X, Y, Z, 1)
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(np.asarray(data, dtype=np.uint8), ref.affine, header=header)
    out.set_qform(ref.get_qform(), int(ref.header["qform_code"]))
    out.set_sform(ref.get_sform(), int(ref.header["sform_code"]))
    out.header.set_slope_inter(1.0, 0.0)
    out.header["cal_min"], out.header["cal_max"] = 0, float(data.max()) if data.size else 0
    with atomic_path(out_path) as tmp:
        nib.save(out, str(tmp))
    return out_path
