"""brainseg3d.preprocessing.sitk_io: the SimpleITK helpers of the raw-scan stages, on small
images the tests make."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg3d.core.cases import GRID_ATOL
from brainseg3d.preprocessing.sitk_io import as_3d, itk_error_text, read_volume, same_grid, write_atomic


def _img(shape=(6, 5, 4), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    img.SetOrigin(origin)
    return img


def test_same_grid_has_the_discovery_tolerance():
    a = _img()
    assert same_grid(a, _img(origin=(0.5 * GRID_ATOL, 0.0, 0.0)))
    assert not same_grid(a, _img(origin=(5 * GRID_ATOL, 0.0, 0.0)))  # the skull strip's old 1e-2 took this
    assert not same_grid(a, _img(shape=(6, 5, 3)))


def test_as_3d_squeezes_a_one_volume_4d_and_names_what_is_not_3d():
    vol4 = sitk.JoinSeries([_img()])
    assert as_3d(vol4).GetDimension() == 3
    two = sitk.JoinSeries([_img(), _img()])
    with pytest.raises(ValueError, match="t1.nii.gz is not a 3D scalar volume"):
        as_3d(two, "t1.nii.gz")


def test_write_atomic_and_read_back(tmp_path):
    out = tmp_path / "x.nii.gz"
    write_atomic(_img(), out)
    assert same_grid(read_volume(out), _img()) and [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]
    with pytest.raises(RuntimeError) as e:
        write_atomic(_img(), tmp_path / "y.unknownformat")  # ITK cannot write it: nothing left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz"]
    assert itk_error_text(e.value) and "\n" not in itk_error_text(e.value)
    assert itk_error_text(RuntimeError("")) == "RuntimeError"
