"""Post-processing rules on volumes with a known answer."""

import numpy as np
import torch

from brainseg3d.inference.postprocessing import PostprocessRegions, PostprocessRegionsd, postprocess_regions


def _regions():
    r = np.zeros((3, 30, 30, 30), bool)
    r[0, 2:12, 2:12, 2:12] = True  # main tumour, 1000 voxels
    r[1, 4:8, 4:8, 4:8] = True  # core, 64
    r[2, 5:7, 5:7, 5:7] = True  # enhancing, 8
    r[0, 20:23, 20:23, 20:23] = True  # island, 27 voxels, with core and ET inside
    r[1, 21, 21, 21] = r[2, 21, 21, 21] = True
    r[0, 25, 25, 25] = r[0, 26, 26, 26] = True  # diagonal neighbours: one component of 2
    return r


def test_small_components_removed_from_every_region():
    out = postprocess_regions(_regions(), min_component=28)
    assert out[0].sum() == 1000 and out[1].sum() == 64 and out[2].sum() == 8
    kept = postprocess_regions(_regions(), min_component=27)
    assert kept[0].sum() == 1000 + 27 and kept[2].sum() == 9  # the island is exactly 27: kept
    two = postprocess_regions(_regions(), min_component=2)
    assert two[0, 25, 25, 25] and two[0, 26, 26, 26]  # full (26-) connectivity
    assert np.array_equal(postprocess_regions(_regions()), _regions())  # both off: unchanged


def test_components_small_relative_to_the_largest_are_removed():
    r = _regions()  # components of 1000, 27 and 2 voxels
    assert postprocess_regions(r, min_fraction=0.02)[0].sum() == 1000 + 27  # 27 >= 20, 2 < 20
    only = postprocess_regions(r, min_fraction=1.0)
    assert only[0].sum() == 1000 and only[2].sum() == 8  # the largest only, with its core and ET
    assert postprocess_regions(r, min_component=28, min_fraction=0.001)[0].sum() == 1000  # the larger of both limits
    assert np.array_equal(postprocess_regions(r, min_fraction=0.0), r)
    import pytest

    with pytest.raises(ValueError, match="min_fraction"):
        PostprocessRegions(min_fraction=1.5)


def test_small_et_becomes_necrosis():
    r = postprocess_regions(_regions(), min_component=28, et_to_necrosis=9)
    assert r[2].sum() == 0 and r[1].sum() == 64 and r[0].sum() == 1000  # ET 8 < 9: now core only
    r = postprocess_regions(_regions(), min_component=28, et_to_necrosis=8)
    assert r[2].sum() == 8  # not smaller than the threshold: kept


def test_tensor_and_dict_forms_agree():
    t = torch.as_tensor(_regions()).float()
    a = PostprocessRegions(28, 9)(t)
    b = PostprocessRegionsd("pred", 28, 9)({"pred": t})["pred"]
    assert a.dtype == t.dtype and torch.equal(a, b)
    assert np.array_equal(a.numpy().astype(bool), postprocess_regions(_regions(), 28, 9))


def test_per_region_thresholds():
    prob = np.zeros((3, 10, 10, 10), np.float32)
    prob[:, 2:8, 2:8, 2:8] = [[[[0.65]]], [[[0.45]]], [[[0.35]]]]
    out = postprocess_regions(prob, thresholds=(0.6, 0.4, 0.3))
    assert out[0].sum() == out[1].sum() == out[2].sum() == 216
    out = postprocess_regions(prob, thresholds=(0.7, 0.5, 0.3))
    assert out[0].sum() == 0 and out[1].sum() == 0 and out[2].sum() == 216
    import pytest

    with pytest.raises(ValueError, match="thresholds"):
        PostprocessRegions(thresholds=(0.5, 1.2, 0.5))


def test_uint16_label_maps_are_read():
    """Some BraTS 2021 label files are uint16; torch has no unique() for that type."""
    from brainseg3d.evaluation.metrics import region_scores

    lab = np.zeros((8, 8, 8), np.uint16)
    lab[2:5, 2:5, 2:5] = 2
    lab[3, 3, 3] = 4
    s = region_scores(lab, lab.astype(np.uint8))
    assert s["Dice_WT"] == 1.0 and s["Dice_ET"] == 1.0
