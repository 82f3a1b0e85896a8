"""brainseg3d: MONAI-native brain tumour segmentation from multimodal MRI (BraTS regions).

Research use only; not a medical device.
"""

__version__ = "0.2.0"


def segment(input, bundle=None, **kwargs):
    """Segment one case and return its label image (``nibabel.Nifti1Image``, uint8, on the input grid).

    Args:
        input: a case folder or 4D NIfTI path, a list of four 3D ``Nifti1Image`` (t1, t1ce, t2,
            flair), a 4D ``Nifti1Image`` (channel-last), or an array ``[4, X, Y, Z]``.
        bundle: bundle folder (default: the shipped model).
        **kwargs: :class:`brainseg3d.inference.predictor.Predictor` options (``precision``, ``labels``,
            ``tta``, ``device``), plus ``affine`` for an array input.

    Example:
        >>> import brainseg3d
        >>> mask = brainseg3d.segment("sample_data/Brats18_2013_20_1")
    """
    import os

    from brainseg3d.core.cases import discover
    from brainseg3d.inference.predictor import Predictor

    affine = kwargs.pop("affine", None)
    predictor = Predictor(bundle, **kwargs)
    if isinstance(input, (str, os.PathLike)):
        cases = discover(input)
        if len(cases) != 1:
            raise ValueError(f"{input}: expected one case, found {len(cases)}")
        return predictor.segment_case(cases[0]).label
    return predictor.segment_image(input, affine=affine).label


def discover(root):
    """Find the BraTS cases under ``root`` (see :func:`brainseg3d.core.cases.discover`)."""
    from brainseg3d.core.cases import discover as _discover

    return _discover(root)


def load_model(bundle=None, **kwargs):
    """A ready :class:`brainseg3d.inference.predictor.Predictor` for the bundle (default: the shipped one)."""
    from brainseg3d.inference.predictor import Predictor

    return Predictor(bundle, **kwargs)
