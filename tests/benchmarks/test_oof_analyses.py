"""The out-of-fold analysis scripts of benchmarks/ (et_gate.py, oof_gallery.py, tc_by_release.py, view_weights.py) on a tiny hand-made CV run."""

import importlib.util
import json

import numpy as np
import pytest

from brainseg3d.preprocessing.transforms import preprocessing
from ..conftest import REPO, write_case

VIEWS = "oof_axial+coronal+sagittal"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def run(tmp_path):
    """Two synthetic cases in a pool datalist, each with a perfect three-view out-of-fold prediction in its fold."""
    items = []
    chain = preprocessing(["image", "label"], normalize="zscore")
    for fold, (case, src) in enumerate([("Synth_001", "adult"), ("Synth_002", "africa")]):
        write_case(tmp_path / "data" / case, case, seed=fold)
        item = {"case": case, "root": "r", "source": src, "fold": fold, "release": ["BraTS 2018", "BraTS-SSA 2023"][fold],
                "image": [f"{case}/{case}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")], "label": f"{case}/{case}_seg.nii.gz"}
        items.append(item)
        d = chain({"image": [str(tmp_path / "data" / p) for p in item["image"]], "label": str(tmp_path / "data" / item["label"])})
        label = np.asarray(d["label"]).astype(np.uint8)
        out = tmp_path / "run" / f"fold{fold}" / VIEWS
        out.mkdir(parents=True)
        np.savez_compressed(out / f"{case}.npz", prob=label * 255, label=label, case=case, source=src)
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"roots": {"r": "data"}, "training": items}))
    post = tmp_path / "post.json"
    post.write_text(json.dumps({"thresholds": [0.4, 0.4, 0.4], "min_component": 0, "min_fraction": 0.2, "et_to_necrosis": 0}))
    return tmp_path / "run", pool, post


def test_et_gate(run, tmp_path):
    """A perfect prediction scores ET Dice 1 without a gate, and a gate can only remove ET from it."""
    r, pool, post = run
    out = tmp_path / "gate"
    assert _script("et_gate").main([str(r), "--pool", str(pool), "--post", str(post), "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert sorted(c["case"] for c in res["cases"]) == ["Synth_001", "Synth_002"]
    for c in res["cases"]:
        assert c["t1c:None"] == pytest.approx(1.0)
        dices = [c[f"t1c:{g}"] for g in res["gates"][1:]]
        assert all(b <= a + 1e-12 for a, b in zip(dices, dices[1:]))  # higher gate, subset of the mask
        assert c["t1c_false_et"] is None and c["t1c_gt_et"] == pytest.approx(c["t1c_pred_et"])
    assert res["mean_et_dice"]["t1c:None"] == {"all": 1.0, "adult": 1.0, "africa": 1.0}
    assert res["nested"]["t1c"]["chosen"] == {"0": None, "1": None}  # no gate beats a perfect mask: none is chosen
    assert "| Synth_001 | adult | 1.000 |" in out.with_suffix(".md").read_text()


def test_oof_gallery(run, tmp_path):
    r, pool, post = run
    gallery = _script("oof_gallery")
    png = tmp_path / "g.png"
    assert gallery.main([str(r), "Synth_002", "Synth_001", "--pool", str(pool), "--post", str(post), "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    with pytest.raises(SystemExit, match="Synth_404"):
        gallery.main([str(r), "Synth_404", "--pool", str(pool), "--post", str(post), "--out", str(png)])


def test_tc_by_release(run, tmp_path):
    """A perfect prediction: TC Dice 1 at every threshold, predicted core = annotated core, no nested gain."""
    r, pool, post = run
    out = tmp_path / "tc"
    assert _script("tc_by_release").main([str(r), "--pool", str(pool), "--post", str(post), "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())["releases"]
    assert sorted(res) == ["BraTS 2018", "BraTS-SSA 2023"]
    for s in res.values():
        assert s["n"] == 1 and set(s["tc_dice"].values()) == {1.0}
        assert s["median_pred_over_gt_tc"] == 1.0 and s["median_gt_tc_share"] == s["median_pred_tc_share"]
        assert s["nested"]["gain"] == 0.0
    assert "| BraTS 2018 | 1 |" in out.with_suffix(".md").read_text()


def test_view_weights(run, tmp_path):
    """Axial and coronal perfect, sagittal tumour everywhere: equal weights at 0.4 are perfect (2/3 inside,
    1/3 outside), at 0.3 not; the sagittal reading alone is not; nothing beats equal weights nested."""
    r, _, _ = run
    for npz in r.glob(f"fold*/{VIEWS}/*.npz"):
        with np.load(npz) as z:
            arrays = dict(z)
        for view in ("axial", "coronal", "sagittal"):
            d = npz.parent.parent / f"oof_{view}"
            d.mkdir(exist_ok=True)
            prob = np.full_like(arrays["prob"], 255) if view == "sagittal" else arrays["prob"]
            np.savez_compressed(d / npz.name, **{**arrays, "prob": prob})
    vw = _script("view_weights")
    out = tmp_path / "vw"
    assert vw.main([str(r), "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())["regions"]
    for region in ("WT", "TC", "ET"):
        t = res[region]["mean_dice"]
        assert t["0.33/0.33/0.33@0.4"] == 1.0 and t["0.33/0.33/0.33@0.3"] < 1.0 and t["0.00/0.00/1.00@0.4"] < 1.0
        assert res[region]["best"] == "0.33/0.33/0.33@0.4" and res[region]["nested_gain"] == 0.0
    assert "| ET | 1.0000 |" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="oof_axial"):
        vw.main([str(tmp_path / "nothing"), "--out", str(out)])


def test_refine3d(run, tmp_path):
    """The stacked 3D refiner: zero correction before training (refined = base); each fold's refiner trains on
    the other folds only and scores its own; a rerun keeps the cached inputs and trained folds."""
    import torch

    r, pool, post = run
    rf = _script("refine3d")
    net = rf.make_net()
    image, prob = torch.randn(4, 10, 12, 9), torch.rand(3, 10, 12, 9)
    logits, delta = rf.refine_logits(net, image, prob)
    assert delta.abs().max() == 0 and torch.allclose(logits, torch.logit(prob.clamp(rf.EPS, 1 - rf.EPS)))
    work, out = tmp_path / "work", tmp_path / "refine"
    args = [str(r), "--pool", str(pool), "--post", str(post), "--work", str(work), "--epochs", "1", "--out", str(out)]
    assert rf.main(args) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert sorted((c["case"], c["fold"]) for c in res["cases"]) == [("Synth_001", 0), ("Synth_002", 1)]
    for c in res["cases"]:  # the perfect out-of-fold prediction scores 1 without the refiner
        assert c["base_WT"] == c["base_TC"] == c["base_ET"] == 1.0
        assert all(0.0 <= c[f"refined_{k}"] <= 1.0 for k in ("WT", "TC", "ET"))
    assert torch.load(work / "fold0.pt")["train_cases"] == 1  # fold 1's case only
    stamps = {p.name: p.stat().st_mtime_ns for p in work.rglob("*.pt")}
    assert rf.main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in work.rglob("*.pt")} == stamps
    assert "| all | 2 | ET |" in out.with_suffix(".md").read_text()
