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
