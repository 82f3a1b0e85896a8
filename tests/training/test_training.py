"""Training: every config smoke-trains 2 steps and validates 1 case; overfit; resume."""

import json

import pytest
import torch
from monai.losses import DiceCELoss

from brainseg3d.cli import main
from brainseg3d.data.datalist import make_datalist, write_datalist
from brainseg3d.training.trainer import augmentation, load_config, train

from ..conftest import BRATS2018, REPO

CONFIGS = ["unet25d", "basicunet25d", "resnet34unet25d", "swinunetr25d", "segresnet3d"]


@pytest.fixture(scope="module")
def tiny_datalist(tmp_path_factory):
    """One training and one validation case, from the real split's validation patients."""
    if not BRATS2018.is_dir():
        pytest.skip("shared data missing")
    doc = make_datalist(BRATS2018, seed=0)
    doc["training"], doc["validation"], doc["testing"] = doc["validation"][:1], doc["validation"][1:2], []
    return write_datalist(doc, tmp_path_factory.mktemp("dl") / "tiny.json")


def _small(name):
    ov = {"data#datalist": None, "train#val_interval": 1}
    ov["data#patch"] = [64, 64, 32] if name == "segresnet3d" else [64, 64]
    ov["train#batch_size"] = 1 if name == "segresnet3d" else 4
    return ov


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_config_smoke_train(name, tiny_datalist, tmp_path):
    ov = _small(name)
    ov["data#datalist"] = str(tiny_datalist)
    out = tmp_path / name
    summary = train(REPO / "configs" / f"{name}.yaml", output=out, max_steps=2, overrides=ov, max_val_cases=1, progress=False)
    assert summary["iterations"] == 2  # (3D: one volume per epoch, so 2 epochs)
    assert 0.0 <= summary["best_val_dice"]["mean"] <= 1.0
    for f in ("best_model.pt", "checkpoint.pt", "metrics.csv", "metrics.json", "curves.png", "summary.json"):
        assert (out / f).is_file(), f
    rows = json.loads((out / "metrics.json").read_text())["epochs"]
    assert rows[-1]["epoch"] == summary["epochs"] and rows[-1]["train_loss"] > 0


def test_loss_decreases_on_one_batch():
    """Overfit one fixed batch: BCE + Dice on [WT, TC, ET] must go down."""
    torch.manual_seed(0)
    net = load_config(REPO / "configs" / "unet25d.yaml").get_parsed_content("network")
    y = torch.zeros(2, 3, 64, 64)
    y[:, 0, 20:44, 20:44] = 1
    y[:, 1, 26:38, 26:38] = 1
    y[:, 2, 30:34, 30:34] = 1
    x = 0.3 * torch.randn(2, 12, 64, 64)
    x[:, :3] += y  # the image shows the tumour, as a real one does
    loss_fn = DiceCELoss(sigmoid=True)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert min(losses[-5:]) < 0.85 * losses[0], losses  # BCE + Dice goes down steadily


def test_resume_round_trip(tiny_datalist, tmp_path):
    ov = _small("unet25d")
    ov["data#datalist"] = str(tiny_datalist)
    cfg = REPO / "configs" / "unet25d.yaml"
    first = train(cfg, output=tmp_path / "a", max_epochs=1, overrides={**ov, "train#max_epochs": 1, "data#tumour_ratio": 1.0}, max_val_cases=1, progress=False)
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert set(ckpt) >= {"network", "optimizer", "lr_scheduler", "trainer"}
    assert ckpt["trainer"]["iteration"] == first["iterations"]
    second = train(cfg, output=tmp_path / "a", max_epochs=2, resume=tmp_path / "a" / "checkpoint.pt", overrides={**ov, "data#tumour_ratio": 1.0}, max_val_cases=1, progress=False)
    assert second["epochs"] == 2 and second["iterations"] == 2 * first["iterations"]
    rows = json.loads((tmp_path / "a" / "metrics.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2]
    # the run clock goes on through the resume: time is the whole training's, not the second part's
    assert ckpt["clock"]["minutes"] > 0 and ckpt["clock"]["cpu_minutes"] > 0
    assert rows[1]["minutes"] > ckpt["clock"]["minutes"] >= rows[0]["minutes"]
    assert second["train_cpu_minutes"] > ckpt["clock"]["cpu_minutes"] and second["train_minutes"] > ckpt["clock"]["minutes"]
    assert "cpu_minutes_unrecorded_epochs" not in second


def test_resume_from_a_checkpoint_without_the_clock(tiny_datalist, tmp_path):
    """Checkpoints written before the run clock existed still resume; wall minutes come from
    the metrics log, and the summary says which epochs' CPU minutes were not counted."""
    ov = _small("unet25d")
    ov["data#datalist"] = str(tiny_datalist)
    ov["data#tumour_ratio"] = 1.0
    cfg = REPO / "configs" / "unet25d.yaml"
    train(cfg, output=tmp_path / "a", max_epochs=1, overrides={**ov, "train#max_epochs": 1}, max_val_cases=1, progress=False)
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", map_location="cpu", weights_only=True)
    del ckpt["clock"]
    torch.save(ckpt, tmp_path / "old.pt")
    # a long first part (1000 minutes in the log), so counting from it cannot be mistaken for the second part alone
    log = tmp_path / "a" / "metrics.json"
    log.write_text(json.dumps({"epochs": [json.loads(log.read_text())["epochs"][0] | {"minutes": 1000.0}]}))
    second = train(cfg, output=tmp_path / "a", max_epochs=2, resume=tmp_path / "old.pt", overrides=ov, max_val_cases=1, progress=False)
    assert second["epochs"] == 2 and second["cpu_minutes_unrecorded_epochs"] == 1
    assert 1000 < second["train_minutes"] < 1010
    assert 1000 < json.loads(log.read_text())["epochs"][1]["minutes"] < 1010


def test_augmentation_keeps_label_binary():
    aug = augmentation("2.5d", [32, 32])
    aug.set_random_state(0)
    d = aug({"image": torch.randn(12, 40, 40), "label": (torch.rand(3, 40, 40) > 0.5).float()})
    assert d["image"].shape == (12, 32, 32) and d["label"].shape == (3, 32, 32)
    assert set(torch.unique(d["label"]).tolist()) <= {0.0, 1.0}


def test_cli_train_smoke(tiny_datalist, tmp_path, capsys):
    rc = main(["train", str(REPO / "configs" / "unet25d.yaml"), "--out", str(tmp_path / "cli"), "--max-steps", "1",
               "--max-val-cases", "1", "--quiet", "--set", f"data#datalist={tiny_datalist}", "--set", "data#patch=[64, 64]"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["iterations"] == 1


def test_recipe_loss_optimizer_schedule_come_from_config():
    """brainseg3d/training/recipe.yaml gives the defaults as MONAI components; a config can replace them."""
    parser = load_config(REPO / "configs" / "unet25d_pool.yaml", {"train#max_epochs": 5})
    net = parser.get_parsed_content("network")
    loss, opt, sched = (parser.get_parsed_content(k) for k in ("loss", "optimizer", "lr_scheduler"))
    assert isinstance(loss, DiceCELoss) and isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["lr"] == 0.002 and opt.param_groups[0]["weight_decay"] == 1e-5
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in net.parameters()}  # one network
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.T_max == 5
    sgd = load_config(REPO / "configs" / "unet25d.yaml", {"optimizer": {"_target_": "torch.optim.SGD", "params": "$@network.parameters()", "lr": 0.1, "momentum": 0.9}})
    assert isinstance(sgd.get_parsed_content("optimizer"), torch.optim.SGD)


def test_unknown_config_key_is_an_error(tmp_path, capsys):
    """A misspelt key fails with its name and the config file, instead of being ignored."""
    with pytest.raises(ValueError, match=r"unknown config key train#max_epoch .*known in train: .*max_epochs"):
        load_config(REPO / "configs" / "unet25d.yaml", {"train#max_epoch": 3})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndata:\n  tumor_ratio: 0.5\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key data#tumor_ratio"):
        load_config([REPO / "configs" / "unet25d.yaml", bad])
    with pytest.raises(ValueError, match="unknown config key epochs"):
        load_config(REPO / "configs" / "unet25d.yaml", {"epochs": 3})
    rc = main(["train", str(REPO / "configs" / "unet25d.yaml"), "--out", str(tmp_path / "r"), "--set", "train#max_epoch=2", "--quiet"])
    assert rc == 2 and "unknown config key train#max_epoch" in capsys.readouterr().err
    bases = {"unet25d_pool_": "unet25d_pool.yaml", "segresnet3d_": "segresnet3d.yaml"}  # overlays -> the config they are read over
    for cfg in sorted((REPO / "configs").glob("*.yaml")):  # every shipped config passes
        base = next((REPO / "configs" / b for prefix, b in bases.items() if cfg.stem.startswith(prefix)), None)
        load_config([base, cfg] if base else cfg)


def test_validation_inferer_comes_from_config():
    """recipe.yaml's SimpleInferer for 2.5D; the 3D config brings its sliding windows."""
    from monai.inferers import SimpleInferer, SlidingWindowInferer

    assert isinstance(load_config(REPO / "configs" / "unet25d_pool.yaml").get_parsed_content("val_inferer"), SimpleInferer)
    sw = load_config(REPO / "configs" / "segresnet3d.yaml").get_parsed_content("val_inferer")
    assert isinstance(sw, SlidingWindowInferer) and tuple(sw.roi_size) == (96, 96, 96) and sw.overlap == 0.25
