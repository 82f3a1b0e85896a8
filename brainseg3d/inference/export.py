"""Returning a prediction to the input (nnU-Net's export stage): invert the preprocessing onto
the input's exact grid (resampling a registered case back to its reference modality), build
the label image, the uncertainty map and the report. :meth:`Predictor.finish_loaded
<brainseg3d.inference.predictor.Predictor.finish_loaded>` is :func:`finish_case`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd
from brainseg3d.core.cases import CaseError
from brainseg3d.io import label_volumes_ml

from brainseg3d.inference.prepare import LoadedCase
from brainseg3d.inference.report import add_warnings, new_report

__all__ = ["Prediction", "to_input_grid", "finish_case"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Prediction:
    """A segmented case: the label image on the input's grid and its report."""

    label: nib.Nifti1Image
    report: dict
    image: torch.Tensor | None = None  # the preprocessed input
    background: Path | None = None  # a modality file on the mask's grid (for previews)
    uncertainty: nib.Nifti1Image | None = None  # uint8 percent on the mask's grid (Predictor(uncertainty=True))
    grid_file: Path | None = None  # the input file whose grid the mask is on (for outputs in its format)



def to_input_grid(predictor, label: torch.Tensor, data: dict, chain, reference, case_id: str, t0: float,
            estimate: dict | None = None) -> Prediction:
    """CPU post-processing of :meth:`predict`'s label map: invert the preprocessing onto the
    input grid, build the NIfTI and the report (and the uncertainty map when estimated)."""
    image = data["image"]
    label = MetaTensor(label, meta=image.meta, applied_operations=image.applied_operations)
    inv = Invertd("pred", transform=chain, orig_keys="image", nearest_interp=True)({"pred": label, "image": image})
    arr = np.asarray(inv["pred"][0].numpy(), dtype=np.uint8)
    unc = None
    if estimate and estimate.get("uncertainty") is not None:
        u = MetaTensor(estimate["uncertainty"], meta=image.meta, applied_operations=image.applied_operations)
        unc = np.asarray(Invertd("pred", transform=chain, orig_keys="image", nearest_interp=True)(
            {"pred": u, "image": image})["pred"][0].numpy(), dtype=np.uint8)
    if reference is not None:
        if arr.shape != tuple(reference.shape[:3]):
            raise CaseError(case_id, f"internal error: mask shape {arr.shape} != input shape {reference.shape[:3]}")
        affine = reference.affine
        hdr = reference.header.copy()
    else:
        affine = np.asarray(inv["pred"].affine, dtype=np.float64)
        hdr = None
    out = nib.Nifti1Image(arr, affine, hdr)
    out.set_data_dtype(np.uint8)
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    report = new_report(case_id, predictor, arr.shape, voxel_ml, label_volumes_ml(arr, voxel_ml, predictor.et_label),
                        round(time.perf_counter() - t0, 3))
    pred = Prediction(out, report, image)
    if unc is not None:
        pred.uncertainty = nib.Nifti1Image(unc, affine, None if hdr is None else hdr.copy())
        pred.uncertainty.set_data_dtype(np.uint8)
    return pred


def finish_case(predictor, loaded: LoadedCase, label: torch.Tensor, t0: float | None = None) -> Prediction:
    """Post-process :meth:`predict_loaded`'s label map into the :class:`Prediction` on the
    input grid (inverting the preprocessing, resampling a registered case back)."""
    t0 = time.perf_counter() if t0 is None else t0
    try:
        pred = to_input_grid(predictor, label, loaded.data, loaded.chain, loaded.reference, loaded.case_id, t0, loaded.estimate)
        pred.report["seconds_load"] = round(loaded.seconds, 3)
        pred.grid_file = loaded.grid_file
        if loaded.warnings:
            add_warnings(pred.report, loaded.warnings)
        if loaded.registration is not None:
            from brainseg3d.preprocessing.registration import resample_to_reference

            reg = loaded.registration
            on_iso = Path(loaded.workdir) / "mask_iso.nii.gz"
            nib.save(pred.label, str(on_iso))
            out = resample_to_reference(on_iso, reg.reference_path, Path(loaded.workdir) / "mask_ref.nii.gz")
            img = nib.load(str(out))
            pred.label = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.uint8), img.affine, img.header)
            if pred.uncertainty is not None:  # uint8 percent: nearest neighbour, as the mask
                nib.save(pred.uncertainty, str(Path(loaded.workdir) / "unc_iso.nii.gz"))
                u = nib.load(str(resample_to_reference(Path(loaded.workdir) / "unc_iso.nii.gz", reg.reference_path,
                                                       Path(loaded.workdir) / "unc_ref.nii.gz")))
                pred.uncertainty = nib.Nifti1Image(np.asarray(u.dataobj, dtype=np.uint8), u.affine, u.header)
            voxel_ml = float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0
            pred.report.update(
                shape=list(img.shape),
                voxel_ml=voxel_ml,
                volumes=label_volumes_ml(np.asarray(pred.label.dataobj), voxel_ml, predictor.et_label),
                registration=reg.report,
                output_grid=f"reference modality {reg.reference} ({Path(reg.reference_path).name})",
            )
            pred.background = Path(reg.reference_path)
        elif loaded.files:
            pred.background = Path(loaded.files[-1])  # FLAIR, or the 4D file
        stripped = loaded.looks_stripped
        pred.report["skull_stripped"] = stripped  # the input the network saw (after any stripping)
        if loaded.skull_strip is not None:
            pred.report["skull_strip"] = loaded.skull_strip
            if loaded.skull_strip.get("applied"):  # said, never silent: the input was changed
                msg = (f"the input did not look skull-stripped ({loaded.skull_strip.get('reason', '')}); brainseg3d "
                       f"removed the skull (brain mask {loaded.skull_strip.get('brain_ml', 0):.0f} ml) before segmenting "
                       "(--skull-strip never keeps the input as it is)")
                add_warnings(pred.report, [msg])
                logger.warning("%s: %s", loaded.case_id, msg)
            if loaded.skull_strip.get("warning"):
                add_warnings(pred.report, [loaded.skull_strip["warning"]])
        if not stripped:
            msg = "input does not look skull-stripped; the model was trained on skull-stripped BraTS images"
            add_warnings(pred.report, [msg])
            logger.warning("%s: %s", loaded.case_id, msg)
        extra = []
        if loaded.registration is not None:
            extra.append("the modalities were on different grids and were registered before segmentation")
        predictor._add_estimate(pred, loaded.estimate, extra)
        return pred
    finally:
        predictor.discard(loaded)

