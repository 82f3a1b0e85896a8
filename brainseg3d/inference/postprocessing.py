"""Post-processing of predicted tumour regions, chosen by cross-validation (nnU-Net habit).

Per-region probability thresholds (WT, TC, ET), then these rules on the binary nested regions ``[WT, TC, ET, X, Y, Z]``
(:class:`~brainseg3d.core.components.PostprocessRegions`, which the bundle uses too):

* ``min_component``: whole-tumour connected components smaller than this many voxels are
  removed, with the core and enhancing tumour inside them (slice-wise 2.5D predictions
  leave small islands of noise).
* ``min_fraction``: whole-tumour components smaller than this fraction of the largest are
  removed as well (a relative rule: stray false positives far from the tumour, e.g. in the
  cerebellum of a raw scan, are much smaller than the tumour itself).
* ``fill_core_holes``: whole-tumour voxels enclosed by the tumour core in a slice of any axis join
  the core (edema predicted inside an enhancing rim becomes necrosis; a 2.5D network reads the
  necrotic centre of a large core less surely than its rim).
* ``et_to_necrosis``: when the whole predicted enhancing tumour is smaller than this many
  voxels it is turned into necrosis (it stays tumour core): the BraTS rule for cases whose
  reference has no enhancing tumour, where any predicted ET scores Dice 0.

The shipped setting lives in the bundle (``configs/inference.json``: ``min_component``,
``min_fraction``, ``fill_core_holes`` and ``et_to_necrosis``), chosen by ``brainseg3d cv score`` on the out-of-fold predictions.

Example:
    >>> regions = postprocess_regions(prob > 0.5, min_component=200, et_to_necrosis=100)
"""

from __future__ import annotations

import numpy as np
import torch

from brainseg3d.core.components import PostprocessRegions, PostprocessRegionsd, fill_plane_holes

__all__ = ["PostprocessRegions", "PostprocessRegionsd", "fill_plane_holes", "postprocess_regions"]


def postprocess_regions(regions, min_component: int = 0, et_to_necrosis: int = 0, thresholds=(0.5, 0.5, 0.5), min_fraction: float = 0.0,
                        fill_core_holes: bool = False):
    """Thresholds and both rules on a ``[3, ...]`` numpy array or tensor (probabilities or
    booleans); returns booleans as numpy, or a tensor of the input's dtype."""
    is_np = not isinstance(regions, torch.Tensor)
    out = PostprocessRegions(min_component, et_to_necrosis, thresholds, min_fraction, fill_core_holes)(torch.as_tensor(np.asarray(regions) if is_np else regions))
    return out.numpy().astype(bool) if is_np else out
