import nibabel as nib
import numpy as np
import pytest
import torch

from brainseg3d.core.cases import discover, inspect_case
from brainseg3d.preprocessing.transforms import LabelToRegions, RegionsToLabels, preprocessing

from ..conftest import FORMATS


def _load(case, keys=("image", "label")):
    d = {"image": [str(p) for p in case.modality_files()]}
    if case.label is not None and "label" in keys:
        d["label"] = str(case.label)
    return d


def test_chain_shapes_dtypes_and_zscore(brats_case):
    case = discover(brats_case)[0]
    out = preprocessing()(_load(case))
    img, lab = out["image"], out["label"]
    assert img.dtype == torch.float32 and lab.dtype == torch.uint8
    assert img.shape[0] == 4 and lab.shape[0] == 3 and img.shape[1:] == lab.shape[1:]
    assert all(s < 240 for s in img.shape[1:3])  # cropped to the brain
    for c in range(4):
        brain = img[c][img[c] != 0]
        assert abs(float(brain.mean())) < 1e-3 and abs(float(brain.std()) - 1) < 1e-2
    # margin: first and last planes touch no brain except within the margin
    assert float(img[:, 0].abs().sum()) == 0.0
    wt, tc, et = lab.bool()
    assert bool((et <= tc).all()) and bool((tc <= wt).all()) and et.any()


def test_minmax_option(brats_case):
    img = preprocessing(["image"], normalize="minmax")(_load(discover(brats_case)[0], ["image"]))["image"]
    for c in range(4):
        assert float(img[c].min()) == pytest.approx(0.0) and float(img[c].max()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        preprocessing(normalize="robust")


def test_region_conversion_known_values():
    lab = torch.tensor([0, 1, 2, 4, 4, 0]).reshape(1, 6, 1, 1)
    r = LabelToRegions()(lab)
    assert r[:, :, 0, 0].tolist() == [[0, 1, 1, 1, 1, 0], [0, 1, 0, 1, 1, 0], [0, 0, 0, 1, 1, 0]]
    lab3 = torch.tensor([0, 1, 2, 3]).reshape(1, 4, 1, 1)
    assert LabelToRegions()(lab3)[2, :, 0, 0].tolist() == [0, 0, 0, 1]  # BraTS 2023: ET = 3
    with pytest.raises(ValueError, match="unknown label values \\[5\\]"):
        LabelToRegions()(torch.tensor([0, 1, 5]).reshape(1, 3, 1, 1))
    with pytest.raises(ValueError, match="both 3 and 4"):
        LabelToRegions()(torch.tensor([0, 3, 4]).reshape(1, 3, 1, 1))
    with pytest.raises(ValueError, match="unknown label values \\[3\\]"):
        LabelToRegions(et_label=4)(lab3)
    # and back: regions -> labels is the inverse on valid maps, for both schemes
    assert RegionsToLabels(4)(r)[0, :, 0, 0].tolist() == [0, 1, 2, 4, 4, 0]
    assert RegionsToLabels(3)(LabelToRegions()(lab3))[0, :, 0, 0].tolist() == [0, 1, 2, 3]
    assert RegionsToLabels(4)(r).dtype == torch.uint8


def test_brats2023_labels_through_chain(shared):
    case = discover(FORMATS / "BraTS-GLI-00000-000")[0]
    out = preprocessing()(_load(case))
    raw = np.asarray(nib.load(str(case.label)).dataobj)
    assert int(out["label"][2].sum()) == int((raw == 3).sum()) > 0


@pytest.mark.slow
def test_inverse_round_trip_every_shared_case(shared):
    """The inverse of the chain restores each input's exact shape and affine."""
    chain = preprocessing(["image"])
    n = 0
    for case in discover(shared):
        if not inspect_case(case).ok:
            continue
        ref = nib.load(str(case.modality_files()[0]))
        out = chain(_load(case, ["image"]))
        assert out["image"].shape[1:] != ref.shape  # it was cropped
        inv = chain.inverse({"image": out["image"]})["image"]
        assert tuple(inv.shape[1:]) == ref.shape, case.case_id
        assert np.allclose(inv.affine.numpy(), ref.affine, atol=1e-4), case.case_id
        n += 1
    assert n == 23


def test_non_ras_and_anisotropic_input(make_case):
    # an LPS input with 2 mm slices: resampled to 1 mm RAS, inverse restores the grid
    aff = np.diag([-1.0, -1.0, 2.0, 1.0])
    folder = make_case("Aniso", shape=(24, 28, 10), affine=aff)
    case = discover(folder)[0]
    chain = preprocessing()
    out = chain(_load(case))
    assert np.allclose(np.diag(out["image"].affine.numpy())[:3], [1, 1, 1])
    inv = chain.inverse({"image": out["image"]})["image"]
    assert tuple(inv.shape[1:]) == (24, 28, 10) and np.allclose(inv.affine.numpy(), aff)
