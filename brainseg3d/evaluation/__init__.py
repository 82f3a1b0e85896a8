"""Evaluation: per-volume Dice and HD95 on the BraTS regions (:mod:`.metrics`), one scoring path
for ``brainseg3d evaluate``, ``score`` and the cross-validation."""

from brainseg3d.evaluation.metrics import EMPTY_HD95, evaluate_folder, region_scores

__all__ = ["EMPTY_HD95", "evaluate_folder", "region_scores"]
