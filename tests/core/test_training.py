"""brainseg3d.core.training: pool folds, the slice sampler's epoch handler, final weights and the
ensemble assembly, on small networks and volumes the tests make."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import UNet

from brainseg3d.core.components import ProbabilityMean, SliceWise25D
from brainseg3d.core.training import Autocast, SliceDataset, SliceResampler, assemble_ensemble, fold_items, save_weights


def _unet(seed):
    torch.manual_seed(seed)
    return UNet(spatial_dims=2, in_channels=12, out_channels=3, channels=(4, 8), strides=(2,), num_res_units=1)


def test_fold_items_one_list_at_a_time(tmp_path):
    (tmp_path / "a").mkdir()
    items = [{"case": f"c{i}", "root": "a", "fold": i % 3, "image": [f"c{i}/t1.nii.gz"] * 4, "label": f"c{i}/seg.nii.gz"} for i in range(6)]
    path = tmp_path / "pool.json"
    path.write_text(json.dumps({"roots": {"a": "a"}, "training": items}))
    train, held = fold_items(path, 1)
    assert [i["case"] for i in held] == ["c1", "c4"] and len(train) == 4
    assert fold_items(path, 1, held_out=True) == held and fold_items(path, 1, held_out=False) == train
    assert held[0]["image"][0] == str(tmp_path / "a" / "c1" / "t1.nii.gz")
    with pytest.raises(ValueError, match="fold 7 is not in"):
        fold_items(path, 7)


def test_slice_resampler_draws_per_epoch():
    from ignite.engine import Engine

    img = torch.zeros(4, 6, 6, 12)
    img[:, 1:5, 1:5, :] = 1.0
    lab = torch.zeros(3, 6, 6, 12, dtype=torch.uint8)
    lab[0, 2:4, 2:4, 5:7] = 1
    ds = SliceDataset([{"image": img, "label": lab}], k=1, tumour_ratio=0.5, seed=0)
    seen = []
    engine = Engine(lambda e, b: seen.append(tuple(ds.index)))
    SliceResampler(ds).attach(engine)
    engine.run([0], max_epochs=6)
    assert len(seen) == 6 and len(set(seen)) > 1  # a new draw of tumour-free slices per epoch
    ds.resample(3)
    assert tuple(ds.index) == seen[2]  # epoch 3's draw, reproducible


def test_save_weights_unwraps_and_assemble_builds_the_ensemble(tmp_path):
    members = [_unet(i) for i in range(2)]
    save_weights(Autocast(members[0]), tmp_path / "fold0" / "model.pt")
    ensemble = SliceWise25D(ProbabilityMean([_unet(9), _unet(9)]), k=1)
    out = tmp_path / "model.pt"
    files = [tmp_path / f"fold{i}" / "model.pt" for i in range(2)]
    assert assemble_ensemble(files, ensemble, out) is None and not out.exists()  # member 1 not trained yet
    save_weights(members[1], files[1])
    assert set(torch.load(files[0], weights_only=True)) == set(members[0].state_dict())  # no "net." prefix
    assert assemble_ensemble(files, ensemble, out) == str(out)
    state = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    fresh = SliceWise25D(ProbabilityMean([_unet(5), _unet(6)]), k=1)
    fresh.load_state_dict(state)
    for i, m in enumerate(members):
        for k, v in m.state_dict().items():
            torch.testing.assert_close(fresh.net.nets[i].state_dict()[k], v.half().float())
    with pytest.raises(ValueError, match="3 members, got 2"):
        assemble_ensemble(files, SliceWise25D(ProbabilityMean([_unet(1)] * 3), k=1), out)


def test_dice_bce_loss_terms():
    """Sigmoid Dice (batch, per slice or a mix) + BCE with logits, term by term."""
    from monai.losses import DiceLoss

    from brainseg3d.core.training import DiceBCELoss

    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), (torch.rand(4, 3, 16, 16) > 0.7).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
    batch, per_slice = DiceLoss(sigmoid=True, batch=True)(x, y), DiceLoss(sigmoid=True, batch=False)(x, y)
    assert torch.allclose(DiceBCELoss()(x, y), bce + batch)  # default: nnU-Net's batch Dice + BCE
    assert torch.allclose(DiceBCELoss(batch_weight=0.0)(x, y), bce + per_slice)
    assert torch.allclose(DiceBCELoss(batch_weight=0.25, lambda_bce=2.0)(x, y), 2 * bce + 0.25 * batch + 0.75 * per_slice)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        DiceBCELoss(batch_weight=1.5)
    with pytest.raises(ValueError, match="one target channel per region"):
        DiceBCELoss()(x, y[:, :1])


def test_dice_bce_loss_region_weights():
    """region_weights weigh each region channel's Dice and cross-entropy, scaled to a mean of 1."""
    from monai.losses import DiceLoss

    from brainseg3d.core.training import DiceBCELoss

    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), (torch.rand(4, 3, 16, 16) > 0.7).float()
    assert torch.allclose(DiceBCELoss(region_weights=[2, 2, 2])(x, y), DiceBCELoss()(x, y))  # equal: unchanged
    per_channel = [DiceBCELoss(batch_weight=0.5)(x[:, c:c + 1], y[:, c:c + 1]) for c in range(3)]
    weighted = DiceBCELoss(batch_weight=0.5, region_weights=[1, 1, 2])(x, y)
    assert torch.allclose(weighted, (0.75 * per_channel[0] + 0.75 * per_channel[1] + 1.5 * per_channel[2]) / 3, atol=1e-6)
    only_et = DiceBCELoss(region_weights=[0, 0, 1])(x, y)
    bce_et = torch.nn.functional.binary_cross_entropy_with_logits(x[:, 2], y[:, 2])
    assert torch.allclose(only_et, bce_et + DiceLoss(sigmoid=True, batch=True)(x[:, 2:], y[:, 2:]), atol=1e-6)
    for bad in ([1, -1, 1], [0, 0, 0]):
        with pytest.raises(ValueError, match="region_weights"):
            DiceBCELoss(region_weights=bad)
    with pytest.raises(ValueError, match="2 region_weights for 3 channels"):
        DiceBCELoss(region_weights=[1, 2])(x, y)


def test_dice_bce_loss_sees_stray_tumour_that_monai_dice_ce_does_not():
    """The reason for DiceBCELoss: on region channels MONAI's DiceCELoss takes a softmax
    cross-entropy, which adds nothing for tumour predicted on background; BCE does."""
    from monai.losses import DiceCELoss

    from brainseg3d.core.training import DiceBCELoss

    y = torch.zeros(2, 3, 32, 32)
    y[:, :, 8:24, 8:24] = 1  # WT, TC and ET on the same square
    clean = torch.where(y > 0, 20.0, -20.0)
    stray = clean.clone()
    stray[:, :, 0:4, 0:4] = 20.0  # tumour predicted on background
    monai_ce = DiceCELoss(sigmoid=True, lambda_dice=0.0)  # its cross-entropy term alone
    assert float(monai_ce(stray, y)) == pytest.approx(float(monai_ce(clean, y)), abs=1e-4)  # blind to the stray voxels
    bce_only = DiceBCELoss(lambda_dice=0.0)
    assert float(bce_only(stray, y)) > float(bce_only(clean, y)) + 0.1
    # a small tumour missed: batch Dice barely sees it, the per-slice term does
    y = torch.zeros(2, 1, 32, 32)
    y[0, 0, 4:28, 4:28] = 1
    y[1, 0, 10:12, 10:12] = 1
    x = torch.full_like(y, -20.0)
    x[0, 0, 4:28, 4:28] = 20.0
    assert float(DiceBCELoss(lambda_bce=0.0)(x, y)) < 0.01 and float(DiceBCELoss(0.5, lambda_bce=0.0)(x, y)) > 0.2
