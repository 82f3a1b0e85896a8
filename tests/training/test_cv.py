"""Cross-validation: the out-of-fold scorer on hand-made predictions with a known Dice, the
post-processing search, and a smoke run of the `cv` command (train, score, export) on three
tiny cases."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from brainseg3d.cli import main
from brainseg3d.training.cv import choose_postprocessing, experiments_table, load_oof, quality_run, score_oof, score_run, summarize
from brainseg3d.inference.predictor import load_bundle_network

from ..conftest import REPO, write_case


def _oof_file(run: Path, fold: int, case: str, source: str, prob: np.ndarray, label: np.ndarray):
    d = run / f"fold{fold}" / "oof"
    d.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(d / f"{case}.npz", prob=(prob * 255).astype(np.uint8), label=label.astype(np.uint8), case=case, source=source)


def _cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[lo:hi, lo:hi, lo:hi] = True
    return m


def test_oof_scores_match_known_dice(tmp_path):
    shape = (3, 20, 20, 20)
    gt = np.zeros(shape, bool)
    gt[0] = _cube(shape[1:], 2, 12)  # WT 1000 voxels
    gt[1] = _cube(shape[1:], 4, 10)  # TC 216
    gt[2] = _cube(shape[1:], 5, 9)  # ET 64
    perfect = gt.astype(np.float32)
    half = gt.astype(np.float32)
    half[:, 2:7] = 0  # WT prediction: 500 of 1000 voxels -> Dice 2*500/1500 (TC too: labels nest)
    half[2] = 0  # no ET predicted where there is ET -> 0
    _oof_file(tmp_path, 0, "Brats18_A_1", "adult", perfect, gt)
    _oof_file(tmp_path, 1, "BraTS-SSA-00001-000", "africa", half, gt)
    oof = load_oof(tmp_path)
    assert [o["fold"] for o in oof] == [0, 1]
    rows = {r["case"]: r for r in score_oof(oof)}
    assert rows["Brats18_A_1"]["Dice_WT"] == pytest.approx(1.0) and rows["Brats18_A_1"]["HD95_ET"] == 0.0
    assert rows["BraTS-SSA-00001-000"]["Dice_WT"] == pytest.approx(2 * 500 / 1500, abs=1e-4)
    assert rows["BraTS-SSA-00001-000"]["Dice_ET"] == 0.0 and rows["BraTS-SSA-00001-000"]["HD95_ET"] > 300
    s = summarize(list(rows.values()))
    assert s["all"]["n"] == 2 and s["adult"]["n"] == 1 and s["africa"]["n"] == 1
    assert s["all"]["Dice_WT"]["mean"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-4)
    assert s["all"]["Dice_WT"]["std"] == pytest.approx((1 - 2 / 3) / 2, abs=1e-4)


def test_postprocessing_search_finds_the_rule_that_pays(tmp_path):
    """A case without ET in its reference and a speck of predicted ET: the ET rule pays;
    a noise island pays the component rule."""
    shape = (3, 24, 24, 24)
    gt = np.zeros(shape, bool)
    gt[0] = _cube(shape[1:], 2, 12)
    gt[1] = _cube(shape[1:], 4, 10)
    pred = gt.astype(np.float32)
    pred[2, 6:8, 6:8, 6:8] = 1  # 8 voxels of ET that are not there
    pred[0, 20:22, 20:22, 20:22] = 1  # an 8-voxel island
    _oof_file(tmp_path, 0, "Brats18_B_1", "adult", pred, gt)
    best, tried = choose_postprocessing(load_oof(tmp_path), {"min_component": [0, 50], "et_to_necrosis": [0, 50]})
    assert best == {"thresholds": [0.5, 0.5, 0.5], "min_component": 50, "min_fraction": 0.0, "et_to_necrosis": 50,
                    "fill_core_holes": False}  # 0/1 probs: 0.5 wins ties; a rule the grid leaves out stays off
    rules = [t for t in tried if "min_component" in t]
    assert len(rules) == 4 and max(t["mean"] for t in rules) == pytest.approx(1.0)
    summary = score_run(tmp_path)  # the full grid: an equally good setting (ties: simpler components, larger ET rule)
    assert summary["postprocessed"]["all"]["Dice_ET"]["mean"] == 1.0 and summary["postprocessed"]["all"]["Dice_WT"]["mean"] == 1.0
    assert summary["raw"]["all"]["Dice_ET"]["mean"] == 0.0
    # the fast Dice of the search agrees with the full scorer (MONAI Dice) for every setting
    for t in rules:
        full = summarize(score_oof(load_oof(tmp_path), {k: t[k] for k in ("thresholds", "min_component", "min_fraction", "et_to_necrosis")}))["all"]
        assert all(t[f"Dice_{r}"] == pytest.approx(full[f"Dice_{r}"]["mean"], abs=1e-6) for r in ("WT", "TC", "ET"))
    for f in ("cv.csv", "cv_raw.csv", "cv.json", "postprocessing.json"):
        assert (tmp_path / f).is_file()


def test_core_hole_filling_is_chosen_when_it_pays_and_not_on_a_tie(tmp_path):
    """A reference core of necrosis under an enhancing rim that the prediction reads as edema:
    filling the core's holes pays TC (WT and ET unchanged), and the search's fast Dice agrees
    with the full scorer; where the core has no hole the search keeps the rule off (ties: simpler)."""
    shape = (3, 24, 24, 24)
    gt = np.zeros(shape, bool)
    gt[0] = _cube(shape[1:], 2, 16)
    gt[1] = _cube(shape[1:], 4, 12)  # TC 512
    gt[2] = _cube(shape[1:], 4, 12) & ~_cube(shape[1:], 5, 11)  # a rim, necrosis inside
    pred = gt.astype(np.float32)
    pred[1] = pred[2]  # the centre predicted as edema
    _oof_file(tmp_path, 0, "Brats18_H_1", "adult", pred, gt)
    grid = {"min_component": [0, 50], "et_to_necrosis": [0], "fill_core_holes": [False, True]}
    best, tried = choose_postprocessing(load_oof(tmp_path), grid)
    assert best["fill_core_holes"] is True and best["min_component"] == 0
    dice = {t["fill_core_holes"]: t["Dice_TC"] for t in tried if t.get("min_component") == 0}
    assert dice[True] == pytest.approx(1.0) and dice[False] == pytest.approx(2 * 296 / (296 + 512))
    for t in [t for t in tried if "min_component" in t]:
        full = summarize(score_oof(load_oof(tmp_path), {k: t[k] for k in ("thresholds", "min_component", "min_fraction", "et_to_necrosis", "fill_core_holes")}))["all"]
        assert all(t[f"Dice_{r}"] == pytest.approx(full[f"Dice_{r}"]["mean"], abs=1e-6) for r in ("WT", "TC", "ET"))
    solid = tmp_path / "solid"
    _oof_file(solid, 0, "Brats18_S_1", "adult", gt.astype(np.float32), gt)
    assert choose_postprocessing(load_oof(solid), grid)[0]["fill_core_holes"] is False


def test_et_rule_ties_go_to_the_largest_threshold_that_costs_nothing(tmp_path):
    """Every case has enhancing tumour (as in the 60-case pool): the ET rule cannot gain there,
    only cost. Among the thresholds that cost nothing the search takes the largest (what a case
    without ET, absent from such a pool, would gain from); one that clears a real ET is not taken."""
    shape = (3, 24, 24, 24)
    for fold, et_hi in ((0, 8), (1, 9)):  # predicted ET = reference ET: 64 and 125 voxels
        gt = np.zeros(shape, bool)
        gt[0] = _cube(shape[1:], 2, 14)
        gt[1] = _cube(shape[1:], 4, 10)
        gt[2] = _cube(shape[1:], 4, et_hi)
        _oof_file(tmp_path, fold, f"Brats18_E{fold}_1", "adult", gt.astype(np.float32), gt)
    oof = load_oof(tmp_path)
    grid = {"min_component": [0, 50], "et_to_necrosis": [0, 50, 64, 100, 200]}
    best, tried = choose_postprocessing(oof, grid)
    assert best["et_to_necrosis"] == 64 and best["min_component"] == 0  # 64 clears nothing (ET of 64 is not < 64)
    costs = {t["et_to_necrosis"]: t["Dice_ET"] for t in tried if t.get("min_component") == 0}
    assert costs[0] == costs[50] == costs[64] == 1.0 and costs[100] == 0.5 and costs[200] == 0.0


def test_relative_component_rule_and_the_nested_estimate(tmp_path):
    """A stray blob at about 12 % of the tumour's size in every case: the relative rule (min_fraction)
    removes it whatever the voxel count; the nested estimate chooses each fold's setting on
    the other folds only, and with the same error everywhere it finds the same rule."""
    from brainseg3d.training.cv import nested_postprocessing

    shape = (3, 24, 24, 24)
    for fold in (0, 1):
        for i, side in enumerate((10, 8)):
            gt = np.zeros(shape, bool)
            gt[0] = _cube(shape[1:], 2, 2 + side)
            pred = gt.astype(np.float32)
            blob = max(1, round((0.1 * side**3) ** (1 / 3)))
            pred[0, 20:20 + blob, 20:20 + blob, 20:20 + blob] = 1
            _oof_file(tmp_path, fold, f"Brats18_F{fold}_{i}", "adult", pred, gt)
    oof = load_oof(tmp_path)
    grid = {"min_component": [0], "min_fraction": [0.0, 0.05, 0.2, 0.5], "et_to_necrosis": [0]}
    best, _ = choose_postprocessing(oof, grid)
    assert best["min_fraction"] == 0.2  # blobs of 12.5 %: the first (simplest) setting that removes them all
    assert summarize(score_oof(oof, best))["all"]["Dice_WT"]["mean"] == 1.0
    rows, chosen = nested_postprocessing(oof, grid)
    assert sorted(r["case"] for r in rows) == sorted(i["case"] for i in oof)
    assert [c["fold"] for c in chosen] == [0, 1] and all(c["min_fraction"] == 0.2 for c in chosen)
    assert nested_postprocessing([i for i in oof if i["fold"] == 0], grid) == ([], [])  # one fold: nothing to nest
    summary = score_run(tmp_path)
    assert "nested" in summary and summary["nested"]["all"]["n"] == 4


def test_thresholds_chosen_per_region(tmp_path):
    """TC over-segmented at 0.5 (its probability is 0.55 outside the true core): the TC
    threshold moves above 0.55; WT and ET stay at 0.5."""
    shape = (3, 20, 20, 20)
    gt = np.zeros(shape, bool)
    gt[0] = _cube(shape[1:], 2, 14)
    gt[1] = _cube(shape[1:], 5, 9)
    prob = gt.astype(np.float32) * 0.9
    prob[1][gt[0] & ~gt[1]] = 0.55
    _oof_file(tmp_path, 0, "Brats18_C_1", "adult", prob, gt)
    from brainseg3d.training.cv import choose_thresholds

    th, tried = choose_thresholds(load_oof(tmp_path))
    assert th[1] >= 0.6 and th[0] == 0.5 and th[2] == 0.5
    assert {t["region"] for t in tried} == {"WT", "TC", "ET"}
    rows = score_oof(load_oof(tmp_path), {"thresholds": th})
    assert rows[0]["Dice_TC"] == pytest.approx(1.0) and score_oof(load_oof(tmp_path))[0]["Dice_TC"] < 0.3


def test_cv_score_without_predictions_is_a_clear_error(tmp_path, capsys):
    assert main(["cv", "score", str(tmp_path)]) == 2
    assert "cv train" in capsys.readouterr().err


@pytest.mark.slow
def _tiny_pool(tmp_path: Path, shape) -> Path:
    """A pool datalist of three tiny cases (two adult, one BraTS-Africa), one per fold of 3."""
    root = tmp_path / "data"
    for i, cid in enumerate(["Brats18_T_1_1", "Brats18_T_2_1", "BraTS-SSA-00003-000"]):
        write_case(root / cid, cid, shape=shape, seed=i, naming="2023" if "SSA" in cid else "2018")
    pool = tmp_path / "lists" / "pool.json"
    assert main(["pool", "--root", f"d={root}", "--out", str(pool), "--folds", "3"]) == 0
    return pool


def test_cv_command_smoke_on_three_tiny_cases(tmp_path, capsys):
    """cv train (3 folds, 2 steps each) -> every case gets an out-of-fold prediction ->
    cv score -> cv export into a copy of the bundle, which then loads as an ensemble."""
    import shutil

    pool = _tiny_pool(tmp_path, shape=(40, 40, 12))
    run = tmp_path / "run"
    args = ["cv", "train", str(REPO / "configs" / "unet25d_pool.yaml"), "--out", str(run), "--max-steps", "2", "--quiet",
            "--set", f"data#datalist={pool}", "--set", "data#patch=[32, 32]", "--set", "train#batch_size=2",
            "--set", "network#channels=[4, 8, 16, 32, 64]"]
    assert main(args) == 0
    assert sorted(p.stem for p in run.glob("fold*/oof/*.npz")) == ["BraTS-SSA-00003-000", "Brats18_T_1_1", "Brats18_T_2_1"]
    mtimes = {p: p.stat().st_mtime for p in run.glob("fold*/final_model.pt")}
    assert main(args) == 0  # finished folds are skipped, not retrained
    assert {p: p.stat().st_mtime for p in run.glob("fold*/final_model.pt")} == mtimes
    capsys.readouterr()
    assert main(["cv", "score", str(run)]) == 0
    out = capsys.readouterr().out
    assert "africa" in out and "adult" in out
    doc = json.loads((run / "cv.json").read_text())
    assert doc["n_cases"] == 3 and doc["folds"] == [0, 1, 2]
    # flip TTA judged on the same out-of-fold cases
    assert main(["cv", "score", str(run), "--tta", "--out", str(tmp_path / "tta")]) == 0
    assert sorted(p.stem for p in run.glob("fold*/oof_tta/*.npz")) == sorted(p.stem for p in run.glob("fold*/oof/*.npz"))
    assert json.loads((tmp_path / "tta" / "cv.json").read_text())["oof"] == "oof_tta"
    # a multi-view ensemble of the same fold models, judged on the same out-of-fold cases
    assert main(["cv", "score", str(run), "--views", "axial,coronal", "--out", str(tmp_path / "views")]) == 0
    assert json.loads((tmp_path / "views" / "cv.json").read_text())["oof"] == "oof_axial+coronal"
    for path in run.glob("fold*/oof_axial+coronal/*.npz"):
        views = [np.load(path.parent.parent / f"oof_{v}" / path.name)["prob"].astype(float) for v in ("axial", "coronal")]
        assert np.abs(np.load(path)["prob"] - (views[0] + views[1]) / 2).max() <= 0.5 + 1e-6
        assert not np.array_equal(views[0], views[1])  # another view, another prediction
    assert sorted(p.stem for p in run.glob("fold*/oof_axial+coronal/*.npz")) == sorted(p.stem for p in run.glob("fold*/oof/*.npz"))
    # flip TTA of the multi-view reading, in one pass (what `segment --tta` does with a multi-view bundle)
    assert main(["cv", "score", str(run), "--views", "axial,coronal", "--tta", "--no-search", "--out", str(tmp_path / "tta_views")]) == 0
    assert json.loads((tmp_path / "tta_views" / "cv.json").read_text())["oof"] == "oof_tta_axial+coronal"
    for path in run.glob("fold*/oof_tta_axial+coronal/*.npz"):
        plain = np.load(path.parent.parent / "oof_axial+coronal" / path.name)["prob"]
        assert np.load(path)["prob"].shape == plain.shape and not np.array_equal(np.load(path)["prob"], plain)
    bundle = tmp_path / "bundle"
    shutil.copytree(REPO / "bundles" / "brats_mri_2p5d_segmentation", bundle)
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    (cfg["unet"] if "unet" in cfg else cfg["network_def"]["net"])["channels"] = [4, 8, 16, 32, 64]
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    assert main(["cv", "export", str(run), "--bundle", str(bundle)]) == 0
    net, parser = load_bundle_network(bundle)
    assert parser["members"] == 3 and parser["min_component"] == doc["postprocessing"]["min_component"]
    x = torch.randn(1, 4, 32, 32, 6)
    with torch.no_grad():
        members = [load_bundle_network(bundle, members=n)[0](x) for n in (1, 3)]
        ts = torch.jit.load(str(bundle / "models" / "model.ts"))(x)
    assert members[0].shape == (1, 3, 32, 32, 6)
    assert torch.allclose(members[1], net(x), atol=1e-5) and torch.allclose(ts, net(x), atol=1e-4)
    with pytest.raises(ValueError, match="members must be 1..3"):
        load_bundle_network(bundle, members=4)
    # the views inference averages: chosen at export, read by inference.json, evaluate.json and TorchScript
    assert main(["cv", "export", str(run), "--bundle", str(bundle), "--views", "axial,sagittal"]) == 0
    net, parser = load_bundle_network(bundle)
    assert parser["views"] == ["axial", "sagittal"] and net.views == ["axial", "sagittal"]
    assert json.loads((bundle / "configs" / "evaluate.json").read_text())["views"] == ["axial", "sagittal"]
    assert json.loads((bundle / "configs" / "train.json").read_text())["views"] == "axial"  # what the members were trained on
    with torch.no_grad():
        axial, sagittal = (load_bundle_network(bundle, views=v)[0](x) for v in ("axial", "sagittal"))
        both = net(x)
        ts = torch.jit.load(str(bundle / "models" / "model.ts"))(x)
    assert torch.allclose(torch.sigmoid(both), (torch.sigmoid(axial) + torch.sigmoid(sagittal)) / 2, atol=1e-5)
    assert torch.allclose(ts, both, atol=1e-4)


def test_cv_3d_reference_reads_held_out_volumes_in_sliding_windows(tmp_path, capsys):
    """The 3D reference (configs/segresnet3d_pool.yaml) on the pool's folds: each fold's held-out
    volumes, whose cropped sizes the network could not take whole, are predicted in the sliding
    windows of its val_inferer, by training and again by `cv score` (the same probabilities);
    slice views are refused for a 3D model."""
    from brainseg3d.training.cv import predict_out_of_fold

    pool = _tiny_pool(tmp_path, shape=(41, 39, 15))
    run = tmp_path / "run"
    assert main(["cv", "train", str(REPO / "configs" / "segresnet3d.yaml"), str(REPO / "configs" / "segresnet3d_pool.yaml"),
                 "--folds", "0", "--out", str(run), "--max-steps", "1", "--quiet", "--set", f"data#datalist={pool}",
                 "--set", "data#patch=[16, 16, 8]", "--set", "train#batch_size=1", "--set", "network#init_filters=8",
                 "--set", "network#blocks_down=[1, 1, 1]", "--set", "network#blocks_up=[1, 1]"]) == 0
    (oof,) = run.glob("fold0/oof/*.npz")
    with np.load(oof) as z:
        prob, label = z["prob"], z["label"]
    assert prob.shape == label.shape and prob.shape[0] == 3
    assert any(s % 4 for s in prob.shape[1:])  # a size the two-down-sampling network cannot take whole
    assert predict_out_of_fold(run, "again", tta=False) == 1
    assert np.array_equal(np.load(run / "fold0" / "again" / oof.name)["prob"], prob)
    with pytest.raises(ValueError, match="3D model has no slice views"):
        predict_out_of_fold(run, "coronal", tta=False, views="coronal")
    capsys.readouterr()
    assert main(["cv", "score", str(run)]) == 0
    assert json.loads((run / "cv.json").read_text())["n_cases"] == 1
    table = experiments_table([run], tmp_path / "experiments.md").read_text()
    assert "| segresnet3d_pool | SegResNet 3D init_filters 8, patch 16x16x8 |" in table
    assert "RandCropByPosNegLabeld" not in table and "RandAffined" in table  # the crop is not an augmentation


def test_experiments_table_from_scored_runs(tmp_path):
    shape = (3, 16, 16, 16)
    gt = np.zeros(shape, bool)
    gt[0] = _cube(shape[1:], 2, 10)
    gt[1] = _cube(shape[1:], 3, 7)
    run = tmp_path / "recipe_a"
    _oof_file(run, 0, "Brats18_A_1", "adult", gt.astype(np.float32), gt)
    _oof_file(run, 1, "BraTS-SSA-00001-000", "africa", gt.astype(np.float32), gt)
    for f in (0, 1):
        (run / f"fold{f}" / "summary.json").write_text(json.dumps({"params": 1_600_000, "epochs": 8, "iterations": 100,
                                                                  "train_cpu_minutes": 10.0, "train_minutes": 5.0, "hardware": "cpu"}))
        (run / f"fold{f}" / "config.yaml").write_text("name: recipe_a\nk: 1\nnetwork: {_target_: monai.networks.nets.UNet, channels: [16, 32]}\n"
                                                      "augmentation: [{_target_: RandFlipd}, {_target_: RandGaussianNoised}]\n")
    with pytest.raises(FileNotFoundError, match="cv score"):
        experiments_table([run], tmp_path / "x.md")
    score_run(run)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"cases": [{"case": "BraTS-SSA-00001-000", "Dice_WT": 0.5, "Dice_TC": 0.4, "Dice_ET": 1.0}]}))
    out = tmp_path / "docs" / "experiments.md"
    assert main(["cv", "table", str(run), "--out", str(out), "--seconds", "recipe_a=1.5", "--compare", f"v0={other}"]) == 0
    text = out.read_text()
    assert "| recipe_a | UNet [16, 32], K=1 | 1.60 M | 8 | 20.0 | RandFlipd, RandGaussianNoised | all | 2 | 1.000 +/- 0.000" in text
    assert "| 1.5 |" in text and "| v0, all its cases | africa | 1 | 0.500 +/- 0.000 | 0.400 +/- 0.000 | 1.000 +/- 0.000 |" in text
    assert "| **recipe_a** (out-of-fold) | africa | 1 | 1.000 +/- 0.000" in text
    assert out.with_suffix(".png").stat().st_size > 1000
    # the same weights read otherwise (e.g. `cv score --views`): the row says which predictions it scored
    for f in (0, 1):
        shutil.copytree(run / f"fold{f}" / "oof", run / f"fold{f}" / "oof_axial+coronal")
    score_run(run, tmp_path / "views", oof_name="oof_axial+coronal")
    for f in (0, 1):
        shutil.copytree(run / f"fold{f}", tmp_path / "views" / f"fold{f}", ignore=shutil.ignore_patterns("oof*"))
    assert main(["cv", "table", str(run), str(tmp_path / "views"), "--out", str(out)]) == 0
    assert "| recipe_a [axial+coronal] | UNet [16, 32], K=1 |" in out.read_text()
    # a fold whose first epochs' CPU time was not counted (resumed from a checkpoint older than the run clock)
    summary = json.loads((run / "fold1" / "summary.json").read_text()) | {"cpu_minutes_unrecorded_epochs": 4}
    (run / "fold1" / "summary.json").write_text(json.dumps(summary))
    assert main(["cv", "table", str(run), "--out", str(out)]) == 0
    assert "| recipe_a | UNet [16, 32], K=1 | 1.60 M | 8 | >= 20.0 |" in out.read_text()


def test_resume_picks_the_newest_epoch_checkpoint(tmp_path):
    from brainseg3d.training.cv import _last_checkpoint

    assert _last_checkpoint(tmp_path) is None
    for e in (2, 10, 9):
        (tmp_path / f"epoch_checkpoint_epoch={e}.pt").write_bytes(b"")
    assert _last_checkpoint(tmp_path).name == "epoch_checkpoint_epoch=10.pt"


def test_quality_fitted_on_out_of_fold_predictions(tmp_path):
    """`cv quality`: cases whose probabilities hesitate more score worse; the calibration
    fitted on them says so, and goes into the bundle's configs/quality.json."""
    shape = (3, 20, 20, 20)
    gt = np.zeros(shape, bool)
    gt[:] = _cube(shape[1:], 4, 14)
    for i in range(8):
        prob = gt.astype(np.float32)
        prob[:, 4 : 4 + i] = 0.3  # the mask misses more of the tumour, where the model hesitates (p < 0.5)
        _oof_file(tmp_path / "run", i % 2, f"Brats18_C{i}_1", "adult" if i % 2 else "africa", prob, gt)
    score_run(tmp_path / "run", post={"min_component": 0, "et_to_necrosis": 0})
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    res = quality_run(tmp_path / "run", bundle=bundle)
    assert res["validation"]["n"] == 8 and res["validation"]["spearman"]["WT"] > 0.9
    caution = res["validation"]["core_caution"]  # 1 mL cores, all enhancing: the core rule flags none
    assert caution["n_flagged"] == 0 and caution["true_dice_flagged"]["TC"] is None
    assert all(r["volumes"]["tumour_core_ml"] <= 1.0 for r in res["validation"]["leave_one_out"])
    calib = json.loads((bundle / "configs" / "quality.json").read_text())
    assert calib["coef"]["WT"][1] < 0  # more penumbra, lower Dice
    assert calib["fitted_on"]["cases"] == 8 and calib["fitted_on"]["folds"] == [0, 1]
    assert (tmp_path / "run" / "quality.png").stat().st_size > 5000
    with pytest.raises(FileNotFoundError, match="cv score"):
        quality_run(tmp_path / "empty")


def _member_run(run: Path, folds, seed: int, channels=(4, 8), config=True):
    """A CV run of small UNets (one per fold), as `cv train` leaves it."""
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    for f in folds:
        d = run / f"fold{f}"
        d.mkdir(parents=True, exist_ok=True)
        net = UNet(2, 4, 3, channels=channels, strides=(2,), norm="INSTANCE")
        torch.save(net.state_dict(), d / "final_model.pt")
        if config:
            (d / "config.yaml").write_text(f"name: r{seed}\nk: 1\n")
            (d / "summary.json").write_text(json.dumps({"name": f"r{seed}", "fold": f, "epochs": 3, "train_cpu_minutes": 2.0, "train_minutes": 1.0}))


def test_cv_average_is_the_mean_of_each_folds_weights(tmp_path):
    """cv average: fold by fold, every weight of the averaged model is the mean of the runs'
    weights; the recipe (config, summary) comes from the last run that has one; runs whose folds
    or architectures differ are refused with a message that names them."""
    a, b = tmp_path / "a", tmp_path / "b"
    _member_run(a, [0, 1], seed=1, config=False)  # bundle members: weights only
    _member_run(b, [0, 1], seed=2)
    out = tmp_path / "soup"
    assert main(["cv", "average", str(a), str(b), "--out", str(out)]) == 0
    for f in (0, 1):
        sa, sb, so = (torch.load(r / f"fold{f}" / "final_model.pt", weights_only=True) for r in (a, b, out))
        assert so.keys() == sa.keys()
        for k in so:
            assert torch.allclose(so[k], (sa[k] + sb[k]) / 2)
        assert any(not torch.equal(sa[k], sb[k]) for k in sa)  # two different runs were averaged
        summary = json.loads((out / f"fold{f}" / "summary.json").read_text())
        assert summary["name"] == "a+r2" and summary["fold"] == f and len(summary["averaged_from"]) == 2
        assert (out / f"fold{f}" / "config.yaml").read_text() == (b / f"fold{f}" / "config.yaml").read_text()
    c = tmp_path / "c"
    _member_run(c, [0], seed=3)
    with pytest.raises(SystemExit, match="folds"):
        main(["cv", "average", str(a), str(c), "--out", str(tmp_path / "x")])
    d = tmp_path / "d"
    _member_run(d, [0, 1], seed=4, channels=(8, 16))
    with pytest.raises(SystemExit, match="architecture"):
        main(["cv", "average", str(a), str(d), "--out", str(tmp_path / "y")])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # nothing half-written


def test_cv_average_widens_members_with_fewer_neighbour_slices(tmp_path):
    """cv average of a run with fewer neighbour slices (here K = 0: one slice, 4 channels) and one
    with more (K = 1: 12 channels): the narrower weights are widened with zeros on the outer
    slices (what they compute is unchanged), so the soup's first layer is the mean on the centre
    slice and half the wider weights on the outer ones; the recipe must be the wider run's."""
    from monai.networks.nets import UNet

    k0, k1 = tmp_path / "k0", tmp_path / "k1"
    _member_run(k0, [0], seed=1)  # 4 input channels
    torch.manual_seed(2)
    (k1 / "fold0").mkdir(parents=True)
    torch.save(UNet(2, 12, 3, channels=(4, 8), strides=(2,), norm="INSTANCE").state_dict(), k1 / "fold0" / "final_model.pt")
    (k1 / "fold0" / "config.yaml").write_text("name: k1\nk: 1\n")
    assert main(["cv", "average", str(k0), str(k1), "--out", str(tmp_path / "soup")]) == 0
    s1, s2, so = (torch.load(r / "fold0" / "final_model.pt", weights_only=True) for r in (k0, k1, tmp_path / "soup"))
    first = [k for k in s2 if s2[k].dim() == 4 and s2[k].shape[1] == 12]
    assert first  # the first layer (and its residual path) read 12 channels
    for k in first:
        assert so[k].shape == s2[k].shape
        assert torch.allclose(so[k][:, 4:8], (s1[k] + s2[k][:, 4:8]) / 2)  # centre slice: the mean
        assert torch.allclose(so[k][:, :4], s2[k][:, :4] / 2) and torch.allclose(so[k][:, 8:], s2[k][:, 8:] / 2)
    for k in set(so) - set(first):
        assert torch.allclose(so[k], (s1[k] + s2[k]) / 2)
    with pytest.raises(SystemExit, match="widest run last"):  # the recipe would be the narrower run's
        main(["cv", "average", str(k1), str(k0), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_network_text_names_the_views_a_model_was_trained_on():
    from brainseg3d.training.cv import _network_text

    net = {"_target_": "monai.networks.nets.UNet", "channels": [16, 32]}
    assert _network_text({"network": net, "k": 1}) == "UNet [16, 32], K=1"
    assert _network_text({"network": net, "k": 1, "views": "coronal"}).endswith(", trained on coronal")  # not c+o+r+o+n+a+l
    assert _network_text({"network": net, "k": 1, "views": ["axial", "sagittal"]}).endswith(", trained on axial+sagittal")
    # a soup (cv average) keeps its last ingredient's config only: the text says it is a soup, not "trained on coronal"
    assert _network_text({"network": net, "k": 1, "views": "coronal"}, soup=3) == "UNet [16, 32], K=1, soup of 3 runs (the last trained on coronal)"
    assert _network_text({"network": net, "k": 1}, soup=2) == "UNet [16, 32], K=1, soup of 2 runs"
