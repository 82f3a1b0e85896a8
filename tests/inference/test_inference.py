"""The predictor: input-space round trip, orientation, 4D inputs, in-memory API, shipped weights."""

import nibabel as nib
import numpy as np
import pytest

from brainseg3d import segment
from brainseg3d.core.cases import discover
from brainseg3d.evaluation.metrics import region_scores
from brainseg3d.inference.predictor import Predictor

from ..conftest import SAMPLE


@pytest.fixture(scope="module")
def predictor():
    # axial only: the tests below are about the input-space round trip, not the views (the
    # shipped three-view reading costs three times the network time; it runs in test_bundle.py)
    return Predictor(precision="fp32", views="axial")


@pytest.fixture(scope="module")
def sample_pred(predictor):
    case = discover(SAMPLE)[0]
    return case, predictor.segment_case(case)


def _arr(img):
    return np.asarray(img.dataobj)


def test_mask_on_input_grid_and_scores(sample_pred):
    case, pred = sample_pred
    ref = nib.load(str(case.modality_files()[0]))
    lab = _arr(pred.label)
    assert pred.label.shape == ref.shape and np.array_equal(pred.label.affine, ref.affine)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1, 2, 4}
    gt = _arr(nib.load(str(case.label)))
    scores = region_scores(lab, gt)
    assert scores["Dice_WT"] > 0.6, scores  # the shipped model finds the tumour (the sample is a training case)
    vols = pred.report["volumes"]
    assert vols["whole_tumour_ml"] == pytest.approx((lab > 0).sum() / 1000, abs=1e-3)
    assert pred.report["model"] == "brats_mri_2p5d_segmentation"


def test_shipped_model_on_shared_case(shared, predictor):
    case = discover(shared / "formats" / "BraTS2021_00006")[0]
    lab = _arr(predictor.segment_case(case).label)
    assert (lab > 0).sum() > 1000  # a non-empty tumour


def test_non_ras_input_round_trip(sample_pred, predictor, tmp_path):
    """Flip two axes and rewrite the affine (same world positions): the mask follows exactly."""
    case, pred = sample_pred
    out = tmp_path / "Flipped_001"
    out.mkdir()
    for role, f in list(case.images.items()) + [("seg", case.label)]:
        img = nib.load(str(f))
        flipped = img.slicer[::-1, :, ::-1]  # nibabel updates the affine: world positions unchanged
        nib.save(flipped, str(out / f"Flipped_001_{role}.nii.gz"))
    assert nib.aff2axcodes(nib.load(str(out / "Flipped_001_t1.nii.gz")).affine) != nib.aff2axcodes(pred.label.affine)
    fcase = discover(out)[0]
    fpred = predictor.segment_case(fcase)
    ref = nib.load(str(fcase.modality_files()[0]))
    assert fpred.label.shape == ref.shape and np.allclose(fpred.label.affine, ref.affine)
    np.testing.assert_array_equal(_arr(fpred.label)[::-1, :, ::-1], _arr(pred.label))


def test_4d_inputs_and_in_memory_api(sample_pred, predictor, tmp_path):
    case, pred = sample_pred
    imgs = [nib.load(str(f)) for f in case.modality_files()]
    stack = np.stack([np.asarray(i.dataobj) for i in imgs], -1)
    nib.save(nib.Nifti1Image(stack, imgs[0].affine), str(tmp_path / "last.nii.gz"))
    nib.save(nib.Nifti1Image(np.moveaxis(stack, -1, 0), imgs[0].affine), str(tmp_path / "first.nii.gz"))
    expected = _arr(pred.label)
    for name in ("last", "first"):
        c = discover(tmp_path / f"{name}.nii.gz")[0]
        got = predictor.segment_case(c).label
        assert got.shape == expected.shape and np.allclose(got.affine, imgs[0].affine)
        np.testing.assert_array_equal(_arr(got), expected, err_msg=name)
    mem = predictor.segment_image(imgs)
    np.testing.assert_array_equal(_arr(mem.label), expected)
    np.testing.assert_array_equal(_arr(predictor.segment_image(nib.Nifti1Image(stack, imgs[0].affine)).label), expected)
    # the public API on paths
    api = segment(SAMPLE, precision="fp32", views="axial")  # the fixture reads axial only
    np.testing.assert_array_equal(_arr(api), expected)


def test_brats2023_label_scheme(sample_pred):
    case, pred = sample_pred
    p23 = Predictor(precision="fp32", labels="brats2023", views="axial").segment_case(case)
    a, b = _arr(pred.label), _arr(p23.label)
    assert set(np.unique(b)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(a == 4, b == 3)
    np.testing.assert_array_equal(np.isin(a, (1, 2)), np.isin(b, (1, 2)))
    with pytest.raises(ValueError):
        Predictor(labels="brats2024")


def test_bf16_matches_fp32_closely(sample_pred):
    """bf16 autocast (the default where the CPU has it) gives fp32's probabilities closely: one
    member, on the 24 middle axial slices of the sample (bf16 is emulated, and slow, on a CPU
    without it; the rest of the path does not depend on the precision)."""
    from monai.metrics import compute_dice

    case, _ = sample_pred
    fp32 = Predictor(precision="fp32", members=1, views="axial", quality=False)
    bf16 = Predictor(precision="bf16", members=1, views="axial", quality=False)
    image = fp32.load(case).data["image"]
    mid = image.shape[-1] // 2
    image = image[..., mid - 12 : mid + 12]
    a, b = fp32.probabilities(image), bf16.probabilities(image)
    assert (a[0] > 0.5).sum() > 1000, "the slices cross the tumour"
    assert float((a - b).abs().mean()) < 0.01
    dice = compute_dice((a[None] > 0.5).float(), (b[None] > 0.5).float())[0]  # per region: WT, TC, ET
    assert float(dice[0]) > 0.97 and float(dice[1]) > 0.95, dice


def test_views_option_reads_other_slices(sample_pred, tmp_path):
    """``views`` replaces the bundle's slice views: one view is the fast option, and on the
    sample case every view finds the tumour the five axial members find."""
    import json
    import shutil

    from brainseg3d.inference.predictor import DEFAULT_BUNDLE, load_bundle_network

    case, pred = sample_pred
    default = _arr(pred.label)  # the five members, axial
    labels = {}
    for views in ("axial", "coronal", ["axial", "sagittal"]):
        p = Predictor(precision="fp32", members=1, views=views)
        assert p.views == ([views] if isinstance(views, str) else views)
        labels[str(views)] = _arr(p.segment_case(case).label)
        assert region_scores(labels[str(views)], default)["Dice_WT"] > 0.8
    assert not np.array_equal(labels["axial"], labels["coronal"])  # other slices, another answer
    with pytest.raises(ValueError, match="views must be distinct names"):
        Predictor(members=1, views="transverse")
    # a bundle that reads one fixed view (no `views` in its config) says so instead of ignoring the option
    old = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, old)
    cfg = json.loads((old / "configs" / "inference.json").read_text())
    cfg.pop("views")
    cfg["network_def"].pop("views")
    (old / "configs" / "inference.json").write_text(json.dumps(cfg))
    assert load_bundle_network(old, members=1)[0].views == ["axial"]
    with pytest.raises(ValueError, match="views cannot be chosen"):
        load_bundle_network(old, views="coronal")
