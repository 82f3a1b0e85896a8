"""Inference, stage by stage: :mod:`.predictor` (the :class:`Predictor`: ``load`` reads and
prepares a case, ``predict_loaded`` runs the network on the device, ``finish_loaded`` returns
the mask to the input's grid with its report), :mod:`.postprocessing` (the CV-chosen rules),
:mod:`.quality` (the per-case quality estimate) and :mod:`.batch` (folders of cases: look-ahead
loading, writer threads, atomic outputs, per-case errors).

Example:
    >>> from brainseg3d.inference import Predictor
    >>> mask = Predictor().segment_case(case).label
"""

from brainseg3d.inference.predictor import DEFAULT_BUNDLE, LoadedCase, Prediction, Predictor, load_bundle_network

__all__ = ["DEFAULT_BUNDLE", "LoadedCase", "Prediction", "Predictor", "load_bundle_network"]
