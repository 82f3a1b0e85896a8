"""Evaluation: per-volume Dice and HD95 on the BraTS regions (:mod:`.metrics`), one scoring path
for ``brainseg3d evaluate``, ``score`` and the cross-validation; paired comparison of two scorings
of the same cases (:mod:`.paired`, ``brainseg3d cv compare``); out-of-fold Dice by tumour size
(:mod:`.strata`, ``brainseg3d cv strata``)."""

from brainseg3d.evaluation.metrics import EMPTY_HD95, evaluate_folder, region_scores
from brainseg3d.evaluation.paired import format_comparison, paired_comparison

__all__ = ["EMPTY_HD95", "evaluate_folder", "region_scores", "paired_comparison", "format_comparison"]
