"""The per-case quality estimate: features, calibration, review rule, the Predictor's block."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from brainseg3d.inference import quality as Q
from brainseg3d.core.cases import discover
from brainseg3d.inference.predictor import Predictor
from brainseg3d.networks import member_network
from brainseg3d.core.labels import REGIONS
from brainseg3d.io import label_volumes_ml

from ..conftest import SAMPLE


def _features(x: float) -> dict:
    return {r: {"penumbra": x} for r in REGIONS}


def test_region_features_sure_and_hesitant_masks():
    prob = torch.zeros(3, 10, 10, 10)
    prob[:, 2:6, 2:6, 2:6] = 1.0  # a sure mask: no penumbra, soft Dice 1
    sure = Q.region_features(prob, [0.5, 0.5, 0.5], stride=1)
    assert sure["WT"]["soft_dice"] == pytest.approx(1.0)
    assert sure["WT"]["penumbra"] == 0.0
    assert sure["WT"]["largest_share"] == 1.0
    assert sure["WT"]["log_volume"] == pytest.approx(np.log10(1 + 64 * 0.001))
    hesitant = prob.clone()
    hesitant[:, 1:8, 1:8, 1:8] = torch.maximum(hesitant[:, 1:8, 1:8, 1:8], torch.tensor(0.3))  # a wide shell at p = 0.3
    hesitant[:, 8, 8, 8] = 0.9  # an island
    h = Q.region_features(hesitant, [0.5, 0.5, 0.5], stride=1)
    assert h["WT"]["penumbra"] == pytest.approx(np.log1p((343 - 64) / 65))
    assert h["WT"]["largest_share"] == pytest.approx(64 / 65)
    assert h["WT"]["soft_dice"] < 1.0
    empty = Q.region_features(torch.zeros(3, 4, 4, 4), [0.5, 0.5, 0.5], features=("penumbra",))
    assert empty == {r: {"penumbra": 0.0} for r in REGIONS}


def test_calibration_recovers_a_known_line_and_review_quantile():
    xs = np.linspace(0.0, 0.6, 20)
    feats = [_features(x) for x in xs]
    dice = [{r: 0.95 - 0.5 * x for r in REGIONS} for x in xs]
    calib = Q.fit_calibration(feats, dice, review_share=0.25, ridge=0.0)
    assert calib["coef"]["WT"] == pytest.approx([0.95, -0.5], abs=1e-9)
    assert calib["review_wt_dice"] == pytest.approx(np.quantile(0.95 - 0.5 * xs, 0.25))
    assert Q.predict_dice(calib, _features(0.2))["TC"] == pytest.approx(0.85)
    assert Q.predict_dice(calib, _features(5.0))["WT"] == 0.0  # clipped to [0, 1]
    # the review rule: under the threshold, or any input warning
    low, high = _features(0.6), _features(0.0)
    assert Q.quality_block(calib, low)["review"] is True
    assert "under" in Q.quality_block(calib, low)["reasons"][0]
    assert Q.quality_block(calib, high) == {"predicted_dice": {"WT": 0.95, "TC": 0.95, "ET": 0.95}, "review": False, "reasons": []}
    warned = Q.quality_block(calib, high, warnings=["registered"])
    assert warned["review"] is True and warned["reasons"] == ["input: registered"]


def test_core_caution_flags_a_large_core_with_little_enhancement():
    """12 mL of core: 0.5 mL of enhancing tumour (4 %) is flagged, 2 mL (17 %) is not; a 9 mL core never is."""
    labels = np.full((40, 40, 40), 2, np.uint8)  # edema around
    labels[:20, :20, :30] = 1  # 12 000 voxels of 1 mm: 12 mL of core ...
    labels[:5, :10, :10] = 4  # ... 500 of them enhancing
    vol = label_volumes_ml(labels, 0.001)  # the case report's volumes
    assert (vol["tumour_core_ml"], vol["enhancing_tumour_ml"]) == pytest.approx((12.0, 0.5))
    assert "little enhancing tumour (0.5 mL) in a large tumour core (12.0 mL)" in Q.core_caution(vol)

    def volumes(tc, et):
        return {"tumour_core_ml": tc, "enhancing_tumour_ml": et}

    assert Q.core_caution(volumes(12.0, 2.0)) is None
    assert Q.core_caution(volumes(9.0, 0.0)) is None
    assert Q.core_caution(volumes(12.0, 2.0), {"min_core_ml": 10.0, "max_et_share": 0.2}) is not None
    calib = Q.fit_calibration([_features(x) for x in np.linspace(0, 0.6, 20)],
                              [{r: 0.95 - 0.5 * x for r in REGIONS} for x in np.linspace(0, 0.6, 20)], review_share=0.25)
    block = Q.quality_block(calib, _features(0.0), warnings=["registered"], volumes=vol)
    assert block["review"] is True and len(block["reasons"]) == 2
    assert block["reasons"][0].startswith("little enhancing tumour") and block["reasons"][1] == "input: registered"
    assert Q.quality_block(calib, _features(0.0), volumes=volumes(12.0, 6.0))["review"] is False


def test_validate_on_made_up_cases():
    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 0.6, 40)
    feats = [_features(x) for x in xs]
    dice = [{r: float(np.clip(0.95 - 0.5 * x + rng.normal(0, 0.01), 0, 1)) for r in REGIONS} for x in xs]
    v = Q.validate(feats, dice, review_share=0.25, poor=0.70)  # about the worst 1 in 6
    assert v["spearman"]["WT"] > 0.9
    assert v["n_poor"] == sum(d["WT"] < 0.70 for d in dice) > 0
    assert v["poor_flagged_share"] == 1.0  # the worst cases are the most hesitant ones
    assert 0.15 <= v["flagged_share"] <= 0.35
    # a feature that says nothing: no correlation to speak of
    noise = [_features(x) for x in rng.uniform(0, 0.6, 40)]
    assert abs(Q.validate(noise, dice)["spearman"]["WT"]) < 0.5


def test_member_agreement():
    a = torch.zeros(2, 3, 6, 6, 6)
    a[:, :, :3] = 1.0
    assert Q.member_agreement(a, [0.5] * 3, stride=1) == {r: 1.0 for r in REGIONS}
    a[1] = 0.0
    a[1, :, :3, :3] = 1.0  # member 2 covers half of member 1
    assert Q.member_agreement(a, [0.5] * 3, stride=1)["WT"] == pytest.approx(2 * 54 / (108 + 54))


def test_strided_features_estimate_the_full_ones():
    rng = np.random.default_rng(0)
    prob = torch.from_numpy(rng.uniform(0, 1, (3, 40, 40, 40)).astype(np.float32)) ** 4
    full, fast = Q.region_features(prob, [0.4, 0.7, 0.8], stride=1), Q.region_features(prob, [0.4, 0.7, 0.8])
    for r in REGIONS:
        assert fast[r]["penumbra"] == pytest.approx(full[r]["penumbra"], rel=0.05)
        assert fast[r]["log_volume"] == pytest.approx(full[r]["log_volume"], rel=0.05)


@pytest.fixture(scope="module")
def predictor():
    return Predictor(precision="fp32", views="axial")  # the estimate's code path; views are tested elsewhere


def test_member_network_matches_the_ensemble(predictor):
    net, m = member_network(predictor.network)
    assert m == predictor.members
    x = torch.randn(1, 4, 40, 36, 6)
    x[:, :, :4] = 0  # some background
    with torch.inference_mode():
        mean = torch.sigmoid(predictor.network(x))
        members = torch.sigmoid(net(x)).reshape(m, 3, 40, 36, 6)
    assert torch.allclose(members.mean(0), mean[0], atol=1e-5)


def test_quality_block_on_the_sample_and_a_noisy_modality(tmp_path):
    """The estimate as shipped: the bundle's views, for which its calibration was fitted."""
    predictor = Predictor(precision="fp32")
    assert predictor.calibration is not None, "the shipped bundle has configs/quality.json"
    clean = predictor.segment_case(discover(SAMPLE)[0]).report["quality"]
    assert set(clean) == {"predicted_dice", "review", "reasons", "member_agreement"}
    for v in [*clean["predicted_dice"].values(), *clean["member_agreement"].values()]:
        assert 0.0 <= v <= 1.0
    # the same case with its FLAIR replaced by noise: the model hesitates, the estimate drops
    noisy = tmp_path / "Noisy_001"
    noisy.mkdir()
    rng = np.random.default_rng(0)
    for f in SAMPLE.glob("*.nii.gz"):
        name = f.name.replace(SAMPLE.name, "Noisy_001")
        img = nib.load(str(f))
        if name.endswith("_flair.nii.gz"):
            brain = np.asarray(img.dataobj) > 0
            data = np.where(brain, rng.uniform(0, 1000, img.shape), 0).astype(np.float32)
            img = nib.Nifti1Image(data, img.affine)
        nib.save(img, str(noisy / name))
    bad = predictor.segment_case(discover(noisy)[0]).report["quality"]
    assert bad["predicted_dice"]["WT"] < clean["predicted_dice"]["WT"] - 0.05


def test_bundle_calibration_is_fitted_and_validated(predictor):
    calib = json.loads((predictor.bundle / "configs" / "quality.json").read_text())
    assert calib["features"] == list(Q.DEFAULT_FEATURES)
    assert calib["fitted_on"]["thresholds"] == predictor.thresholds  # fitted for the shipped post-processing
    assert set(calib["validation"]["spearman"]) == set(REGIONS)


def test_no_quality_when_turned_off():
    p = Predictor(precision="fp32", quality=False, views="axial")
    assert p.calibration is None and p._members is None


def test_box_dilate_is_the_cubic_max_pool():
    """The penumbra's reach: three 1D max pools give exactly the (2r+1)^3 box max."""
    from brainseg3d.inference.quality import box_dilate

    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 1, 17, 20, 15, generator=gen) > 0.98).float()
    for r in (1, 3, 6):
        assert torch.equal(box_dilate(x, r), torch.nn.functional.max_pool3d(x, 2 * r + 1, 1, r))
    assert box_dilate(x, 3).sum() > x.sum()
