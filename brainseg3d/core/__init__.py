"""The bundle boundary: what the MONAI bundle carries verbatim in ``scripts/``.

Modules here import only the standard library, torch, MONAI, numpy, nibabel (SimpleITK and
scipy lazily, inside the functions that need them) and each other, never the rest of the
package: ``brainseg3d bundle sync`` copies them into the bundle (``bundle.VENDORED``), and
``tests/test_bundle.py`` / ``tests/core/test_core.py`` fail when a module breaks the rule or a copy drifts.

* :mod:`.cases`: the modality vocabulary and case discovery under every BraTS naming.
* :mod:`.checks`: the input checks (named errors for bad volumes).
* :mod:`.components`: ``SliceWise25D``, ``ProbabilityMean``, the label <-> region transforms
  and the post-processing rules.
"""
