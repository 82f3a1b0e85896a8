"""The per-case report (``<case>.json``): its fields, defined once, and the two ways it grows.

Every report has the :class:`CaseReport` keys below; the optional ones appear when they apply
(registration, skull stripping, the quality estimate, warnings). :func:`new_report` makes it,
:func:`add_warnings` is the one way a warning gets in (in order, no duplicates).
"""

from __future__ import annotations

from typing import Iterable, TypedDict

__all__ = ["CaseReport", "new_report", "add_warnings"]


class CaseReport(TypedDict, total=False):
    """The fields of a case's report (``total=False``: the last group is optional)."""

    case: str  # the case id
    model: str  # the bundle's folder name
    model_version: str  # the bundle's metadata version
    brainseg3d_version: str
    labels: str  # label scheme: "brats" (ET = 4) or "brats2023" (ET = 3)
    precision: str  # "fp32" or "bf16"
    tta: bool
    postprocessing: dict  # thresholds, min_component, min_fraction, et_to_necrosis, fill_core_holes
    device: str
    shape: list  # the mask's shape (the input's grid)
    voxel_ml: float
    volumes: dict  # ml per tumour part and region
    seconds_inference: float
    seconds_load: float
    seconds: float
    # optional
    warnings: list  # input checks, registration, skull stripping: said, never silent
    registration: dict
    output_grid: str
    skull_stripped: bool
    skull_strip: dict
    quality: dict  # predicted Dice per region, review flag and reasons, member agreement


def new_report(case_id: str, predictor, shape, voxel_ml: float, volumes: dict, seconds_inference: float) -> CaseReport:
    """The report of a case the ``predictor`` (a :class:`~brainseg3d.inference.Predictor`) segmented."""
    from brainseg3d import __version__

    return CaseReport(
        case=case_id,
        model=predictor.model_name,
        model_version=predictor.model_version,
        brainseg3d_version=__version__,
        labels=predictor.labels,
        precision=predictor.precision,
        tta=predictor.tta,
        postprocessing={"thresholds": predictor.thresholds, "min_component": predictor.min_component,
                        "min_fraction": predictor.min_fraction, "et_to_necrosis": predictor.et_to_necrosis,
                        "fill_core_holes": predictor.fill_core_holes},
        device=str(predictor.device),
        shape=list(shape),
        voxel_ml=voxel_ml,
        volumes=volumes,
        seconds_inference=seconds_inference,
    )


def add_warnings(report: CaseReport, warnings: Iterable[str]) -> None:
    """Append warnings to ``report["warnings"]`` (created when needed), each once, in order."""
    have = report.setdefault("warnings", [])
    for w in warnings:
        if w and w not in have:
            have.append(w)
