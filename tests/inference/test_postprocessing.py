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


def _ringed_core():
    """A whole tumour of 12^3 whose core is a shell of enhancing tumour (1 voxel thick) around
    a 4^3 centre that the prediction calls edema, plus a core cup open on one side."""
    r = np.zeros((3, 40, 40, 40), bool)
    r[0, 2:14, 2:14, 2:14] = True
    r[2, 4:10, 4:10, 4:10] = True
    r[2, 5:9, 5:9, 5:9] = False  # the centre: WT only (edema inside the rim)
    r[0, 20:30, 20:30, 20:30] = True
    r[2, 22:28, 22:28, 22:28] = True
    r[2, 23:27, 23:27, 23:28] = False  # a cup of 4 x 4 x 5 edema voxels, open at its top (z = 28 is edema)
    return r


def test_fill_plane_holes_is_the_slice_wise_fill_of_every_axis():
    from scipy import ndimage

    from brainseg3d.inference.postprocessing import fill_plane_holes

    rng = np.random.default_rng(0)
    for shape in ((12, 10, 9), (7, 7)):
        m = rng.random(shape) > 0.45  # many small holes, some touching the volume's edge
        if m.ndim == 2:
            expect = ndimage.binary_fill_holes(m)
        else:
            expect = np.zeros_like(m)
            for axis in range(3):
                expect |= np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(m, axis, 0)]), 0, axis)
        assert np.array_equal(fill_plane_holes(m), expect)
    edge = np.zeros((5, 5, 5), bool)
    edge[0:3, 0:3, 2] = True
    edge[1, 1, 2] = False  # enclosed in its axial slice although the ring touches the volume's edge
    assert fill_plane_holes(edge)[1, 1, 2]
    open_ring = edge.copy()
    open_ring[0, 1, 2] = False  # a gap in the ring: open
    assert not fill_plane_holes(open_ring)[1, 1, 2]
    assert not fill_plane_holes(np.zeros((4, 4, 4), bool)).any()


def test_core_holes_become_necrosis():
    r = _ringed_core()
    out = postprocess_regions(r, fill_core_holes=True)
    assert out[1, 5:9, 5:9, 5:9].all()  # the enclosed edema joins the core (necrosis under the rim)
    assert np.array_equal(out[0], r[0]) and np.array_equal(out[2], r[2])  # WT and ET unchanged
    # the cup: each axial slice of its cavity is enclosed by the rim, although in 3D the cavity opens at
    # the top (a 3D fill, e.g. monai.transforms.FillHoles, leaves it): a slice-wise fill
    assert out[1, 23:27, 23:27, 23:28].all() and out[1].sum() == 64 + 80
    from scipy import ndimage

    assert not ndimage.binary_fill_holes(r[2])[23:27, 23:27, 23:28].any()
    assert np.array_equal(postprocess_regions(r), r)  # off by default
    bg = r.copy()
    bg[0, 5:9, 5:9, 5:9] = False  # enclosed but not tumour: stays background
    assert not postprocess_regions(bg, fill_core_holes=True)[1, 5:9, 5:9, 5:9].any()
    t = torch.as_tensor(r).float()
    assert torch.equal(PostprocessRegions(fill_core_holes=True)(t), PostprocessRegionsd("pred", fill_core_holes=True)({"pred": t})["pred"])
