"""Writers: the preview's orientation (radiological by default, letters, mm aspect)."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg3d.io import preview_slice, write_preview


def test_preview_slice_conventions():
    vol = np.zeros((4, 3, 1))  # RAS: x to the patient's right, y anterior
    vol[3, 1, 0] = 1  # the patient's right
    vol[0, 2, 0] = 2  # left and anterior
    radio = preview_slice(vol, 0)
    assert radio[1, 0] == 1  # radiological: the patient's right on the image's left
    assert radio[0, 3] == 2  # anterior up, the patient's left on the image's right
    neuro = preview_slice(vol, 0, "neurological")
    assert neuro[1, 3] == 1 and neuro[0, 0] == 2
    with pytest.raises(ValueError, match="radiological or neurological"):
        preview_slice(vol, 0, "upside-down")


def test_preview_of_a_mirrored_file_is_the_same_picture(tmp_path):
    """An LAS file and its RAS twin (same patient, data flipped with the header) draw alike."""
    import matplotlib.image as mpimg

    rng = np.random.default_rng(0)
    img = rng.uniform(1, 2, (20, 24, 8)).astype(np.float32)
    lab = np.zeros((20, 24, 8), np.uint8)
    lab[14:18, 5:9, 3:5] = 2  # on the patient's right
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    las = ras.copy()
    las[0, 0], las[0, 3] = -1.0, 19.0
    write_preview(img, lab, tmp_path / "ras.png", affine=ras)
    write_preview(img[::-1], lab[::-1], tmp_path / "las.png", affine=las)
    a, b = mpimg.imread(tmp_path / "ras.png"), mpimg.imread(tmp_path / "las.png")
    assert a.shape == b.shape and np.abs(a - b).mean() < 1e-3
