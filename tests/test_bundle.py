"""The MONAI bundle ``bundles/brats_mri_2p5d_segmentation``: metadata, configs, network, runs.

Everything runs on the real shared data and the shipped weights; each ``python -m monai.bundle
run`` is a real subprocess (session-scoped, so each case is segmented once):

- the vendored ``scripts/`` are byte-identical to the package modules they copy;
- ``metadata.json`` validates against the MONAI bundle schema, and the label names MONAI Label
  reads (first output's ``channel_def``) are exactly the voxel values the bundle writes;
- ``verify_net_in_out``, ``ckpt_export`` (TorchScript == eager) and the workflow properties;
- ``inference.json`` on a case folder and on a 4D channel-last NIfTI gives the input's grid and
  the very mask of ``brainseg3d.inference.predictor.Predictor``; ``train.json`` trains, ``evaluate.json``
  scores and writes the same mask;
- the 3D Slicer colour table lists the metadata's labels.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "brats_mri_2p5d_segmentation"
CONFIGS = BUNDLE / "configs"
META = CONFIGS / "metadata.json"
INFER = CONFIGS / "inference.json"
TRAIN = CONFIGS / "train.json"
EVALUATE = CONFIGS / "evaluate.json"
MULTI_GPU = CONFIGS / "multi_gpu_train.json"
# the cross-validation record of the shipped weights: metadata.json's ``cv_record`` names it (one place)
SHIPPED_RECORD = BUNDLE / json.loads(META.read_text())["cv_record"]
COLOURS = BUNDLE / "docs" / "brats_colours.ctbl"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCHEMA = SHARED.parent / "schemas" / "monai_bundle_meta_schema.json"
CASE_ID = "Brats18_CBICA_AME_1"  # validation split of data_lists/brats2018.json
CASE_DIR = SHARED / "brats2018" / CASE_ID
MODALITIES = ("t1", "t1ce", "t2", "flair")
STACK_ID = "AME_stacked4d"  # the same case as one 4D channel-last NIfTI, as MONAI Label sends it
RUN_TIMEOUT = 600


def need_case() -> None:
    if not CASE_DIR.is_dir():
        pytest.skip(f"shared data not found at {CASE_DIR}: the bundle runs need a real BraTS case")


def metadata() -> dict:
    return json.loads(META.read_text())


def label_values() -> set[int]:
    """Keys of the first output's channel_def, as voxel values."""
    outputs = metadata()["network_data_format"]["outputs"]
    return {int(k) for k in next(iter(outputs.values()))["channel_def"]}


@pytest.fixture
def bundle_on_path():
    """The bundle's ``scripts`` package importable, as monai.bundle and MONAI Label arrange it."""
    sys.path.insert(0, str(BUNDLE))
    yield BUNDLE
    sys.path.remove(str(BUNDLE))
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]


def bundle_cmd(configs: list[Path], **overrides) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str([str(c) for c in configs])]
    cmd += ["--bundle_root", str(BUNDLE)]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def run_bundle(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run outside the bundle folder (cwd elsewhere): the bundle must not depend on the cwd."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


# ----------------------------------------------------------------------------- vendored code


def test_vendored_scripts_are_verbatim_copies():
    from brainseg3d.bundle import sync_bundle

    drifted = sync_bundle(BUNDLE, check=True)
    assert not drifted, f"{BUNDLE.name}: {drifted} differ from the package modules: run `brainseg3d bundle sync`"


def test_vendored_modules_import_nothing_else_from_the_package():
    """The bundle runs with MONAI alone: what it vendors may import torch, MONAI, numpy,
    nibabel, the packages its metadata declares and the standard library, never another
    brainseg3d module."""
    import ast

    from brainseg3d.bundle import VENDORED

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    allowed = {"torch", "monai", "numpy", "nibabel", "__future__", *meta.get("optional_packages_version", {})}
    vendored = {Path(src).stem for src in VENDORED.values()}
    for src in VENDORED.values():
        tree = ast.parse((REPO / "brainseg3d" / src).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:  # a sibling, vendored beside it
                    assert node.level == 1 and node.module in vendored, f"{src}: imports .{node.module}, which the bundle does not carry"
                    continue
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, f"{src} imports {name}"


def test_bundle_sync_copies_and_checks_the_version(tmp_path):
    import shutil

    from brainseg3d.bundle import sync_bundle

    copy = tmp_path / BUNDLE.name
    shutil.copytree(BUNDLE / "configs", copy / "configs")
    shutil.copytree(BUNDLE / "scripts", copy / "scripts")
    (copy / "scripts" / "cases.py").write_text("# stale\n")
    assert sync_bundle(copy, check=True) == ["scripts/cases.py"]
    assert sync_bundle(copy) == ["scripts/cases.py"] and sync_bundle(copy, check=True) == []
    assert (copy / "scripts" / "cases.py").read_bytes() == (REPO / "brainseg3d" / "core" / "cases.py").read_bytes()
    meta = json.loads((copy / "configs" / "metadata.json").read_text())
    meta["version"] = "0.0.1"
    (copy / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no entry"):
        sync_bundle(copy, check=True)


# ----------------------------------------------------------------------------- metadata


def test_cv_export_writes_the_runs_own_architecture(tmp_path):
    """A run of another UNet width and K exports as it was trained: the bundle's network_def
    (inference.json and train.json) follows the run's config, and the weights load into it."""
    import shutil

    import yaml
    from monai.networks.nets import UNet

    from brainseg3d.bundle import export_ensemble, network_from_run, recipe_from_run
    from brainseg3d.inference.predictor import load_bundle_network

    run = tmp_path / "run"
    net_cfg = {"_target_": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": "$4 * (2 * @k + 1)", "out_channels": 3,
               "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1, "norm": "INSTANCE"}
    for fold in (0, 1):
        d = run / f"fold{fold}"
        d.mkdir(parents=True)
        train = {"max_epochs": 4, "init_weights": "runs/k1/fold{fold}/final_model.pt"}  # a warm-started stage
        loss = {"_target_": "DiceCELoss", "sigmoid": True, "batch": True}  # the run's own loss (stage 2's batch Dice)
        (d / "config.yaml").write_text(yaml.safe_dump({"k": 2, "network": net_cfg, "train": train, "loss": loss}, sort_keys=False))
        torch.manual_seed(fold)
        unet = UNet(spatial_dims=2, in_channels=20, out_channels=3, channels=[8, 16, 32], strides=[2, 2], num_res_units=1, norm="INSTANCE")
        torch.save(unet.state_dict(), d / "final_model.pt")
    unet_kwargs, k = network_from_run(run)
    assert k == 2 and unet_kwargs["channels"] == [8, 16, 32] and "_target_" not in unet_kwargs
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("*.ts", "eval", "__pycache__"))
    recipe, _ = recipe_from_run(run)
    export_ensemble(sorted(run.glob("fold*/final_model.pt")), bundle, torchscript=False, unet=unet_kwargs, k=k, recipe=recipe)
    for name in ("inference.json", "train.json"):
        cfg = json.loads((bundle / "configs" / name).read_text())
        assert cfg["k"] == 2 and cfg["unet"]["channels"] == [8, 16, 32] and cfg["members"] == 2, name
    train = json.loads((bundle / "configs" / "train.json").read_text())
    assert train["epochs"] == 4 and train["init_weights"] is None  # runs anywhere; the comment says where the members started
    assert "runs/k1/fold{fold}/final_model.pt" in train["_comment_init_weights_recipe"]
    assert train["loss"] == {"_target_": "DiceCELoss", "sigmoid": True, "batch": True}  # the loss the members were trained with
    for fold in (0, 1):  # a run config written before it kept its loss: the trainer's default, recipe.yaml's
        path = run / f"fold{fold}" / "config.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "loss"}))
    default = yaml.safe_load((REPO / "brainseg3d" / "training" / "recipe.yaml").read_text())["loss"]
    assert recipe_from_run(run)[0]["loss"] == default and "batch" not in default
    mixed = {"_target_": "brainseg3d.core.training.DiceBCELoss", "batch_weight": 0.5}
    for fold in (0, 1):  # a loss of the package's core: train.json names the bundle's verbatim copy
        path = run / f"fold{fold}" / "config.yaml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "loss": mixed}))
    assert recipe_from_run(run)[0]["loss"] == {**mixed, "_target_": "scripts.training.DiceBCELoss"}
    net, _ = load_bundle_network(bundle)
    with torch.no_grad():
        out = net(torch.rand(1, 4, 32, 32, 6))
    assert out.shape == (1, 3, 32, 32, 6)
    path = run / "fold0" / "config.yaml"  # slices drawn by source: train.json cannot say so, so no recipe
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "data": {"source_weights": {"adult": 2.0}}}))
    with pytest.raises(ValueError, match="source_weights"):
        recipe_from_run(run)
    (run / "fold1" / "config.yaml").write_text(yaml.safe_dump({"k": 1, "network": net_cfg}))
    with pytest.raises(ValueError, match="different networks or K"):
        network_from_run(run)
    for fold in (0, 1):
        (run / f"fold{fold}" / "config.yaml").write_text(yaml.safe_dump({"k": 1, "network": {"_target_": "monai.networks.nets.BasicUNet"}}))
    with pytest.raises(ValueError, match="built from monai.networks.nets.UNet"):
        network_from_run(run)


def test_metadata_validates_against_schema():
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"bundle schema not found at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    assert validator_cls is jsonschema.Draft201909Validator  # the schema's "$schema" draft
    validator_cls.check_schema(schema)
    validator_cls(schema).validate(metadata())
    # the validator does look at the network formats (a broken one is refused)
    broken = metadata()
    broken["network_data_format"]["outputs"]["pred"].pop("dtype")
    with pytest.raises(jsonschema.ValidationError):
        validator_cls(schema).validate(broken)


def test_metadata_versions_and_use():
    import monai

    meta = metadata()
    assert meta["version"] == "0.15.0" and meta["version"] == next(iter(meta["changelog"]))  # newest entry first
    # the versions the bundle was made with; the bundle spec expects later ones to work too
    from packaging.version import Version

    assert Version(meta["monai_version"]) <= Version(monai.__version__)
    assert Version(meta["pytorch_version"]) <= Version(torch.__version__.split("+")[0])
    assert Version(meta["numpy_version"]) <= Version(np.__version__)
    for package in meta["required_packages_version"]:
        importlib.metadata.version(package)  # installed
    assert "research" in meta["intended_use"].lower() and "not" in meta["intended_use"].lower()
    assert "diagnos" in meta["intended_use"].lower()
    assert meta["data_type"] == "nibabel" and "brats" in meta["data_source"].lower()
    assert any("BRATS" in r or "BraTS" in r for r in meta["references"])


def test_metadata_input_and_output_formats():
    fmt = metadata()["network_data_format"]
    image = fmt["inputs"]["image"]
    assert list(fmt["inputs"]) == ["image"]
    assert image["num_channels"] == 4 and image["channel_def"] == {"0": "T1", "1": "T1c", "2": "T2", "3": "FLAIR"}
    assert len(image["spatial_shape"]) == 3
    pred = next(iter(fmt["outputs"].values()))  # MONAI Label reads the first output
    assert next(iter(fmt["outputs"])) == "pred"
    assert pred["num_channels"] == 1 and pred["dtype"] == "uint8" and pred["value_range"] == [0, 4]
    assert pred["channel_def"] == {
        "0": "background",
        "1": "necrotic tumour core",
        "2": "peritumoral edema",
        "4": "enhancing tumour",
    }


def test_docs_state_the_shipped_model():
    """The model card and the README describe the weights that ship: member count, post-processing
    thresholds and the cross-validated Dice of ``eval_metrics`` (a new bundle must update them)."""
    cfg = json.loads((CONFIGS / "inference.json").read_text())
    card = (BUNDLE / "docs" / "README.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"An ensemble of **{cfg['members']} 2D" in card
    assert f"An ensemble of {cfg['members']} 2D" in metadata()["description"]
    thresholds = "/".join(f"{t:g}" for t in cfg["thresholds"])
    assert f"thresholds` = {thresholds} (WT/TC/ET)" in card
    assert f"thresholds WT/TC/ET {thresholds}" in readme
    assert f"`et_to_necrosis` = {cfg['et_to_necrosis']}:" in card and f"et_to_necrosis {cfg['et_to_necrosis']}:" in readme
    fill = "true" if cfg["fill_core_holes"] else "false"
    assert f"`fill_core_holes` = {fill}:" in card and f"fill_core_holes {'on' if cfg['fill_core_holes'] else 'off'}:" in readme
    metrics = metadata()["eval_metrics"]
    values = [f"{metrics[f'cv_all_dice_{r}']:.3f} ±" for r in ("wt", "tc", "et")]
    for text in (card, readme):
        rows = [line for line in text.splitlines() if line.startswith("| all |")]
        assert any(all(v in line for v in values) for line in rows), values


def test_eval_metrics_are_the_shipped_record():
    """``eval_metrics`` are the post-processed and nested Dice means of the shipped weights' CV
    record (metadata.json's ``cv_record``, rounded to 4 places), and its post-processing is the one
    inference.json applies."""
    assert SHIPPED_RECORD.parent == BUNDLE / "docs" / "training" and (SHIPPED_RECORD / "fold0").is_dir()
    cv = json.loads((SHIPPED_RECORD / "cv.json").read_text())
    expected = {
        f"{prefix}_{source}_dice_{region.lower()}": round(cv[key][source][f"Dice_{region}"]["mean"], 4)
        for key, prefix in (("postprocessed", "cv"), ("nested", "cv_nested"))
        for source in ("all", "adult", "africa")
        for region in ("WT", "TC", "ET")
    }
    assert metadata()["eval_metrics"] == expected
    infer = json.loads(INFER.read_text())
    for key, value in cv["postprocessing"].items():
        assert infer[key] == value, key


def test_inference_and_evaluation_read_the_same_views():
    """The views the post-processing was chosen for are the ones inference and evaluation read,
    and the shipped network_def is built with them."""
    from brainseg3d.inference.predictor import load_bundle_network

    infer = json.loads((CONFIGS / "inference.json").read_text())
    evaluate = json.loads((CONFIGS / "evaluate.json").read_text())
    assert infer["views"] == evaluate["views"] == ["axial", "coronal", "sagittal"]
    assert infer["network_def"]["views"] == "@views"
    net, _ = load_bundle_network(BUNDLE, weights=False, members=1)
    assert net.views == infer["views"] and net.dims == [4, 3, 2]


def test_channel_def_keys_are_the_values_the_bundle_writes(bundle_on_path):
    """Every combination of region bits through the bundle's own post-processing."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(INFER))
    et_label = parser.get_parsed_content("et_label")
    targets = [t["_target_"] for t in parser["postprocessing"]["transforms"]]
    (index,) = [i for i, t in enumerate(targets) if t.endswith("RegionsToLabelsd")]
    post = parser.get_parsed_content(f"postprocessing#transforms#{index}", instantiate=True)
    bits = torch.tensor([[(i >> r) & 1 for i in range(8)] for r in range(3)], dtype=torch.float32)
    written = set(post({"pred": bits[:, :, None, None]})["pred"].unique().tolist())
    assert written == label_values() == {0, 1, 2, et_label}
    from brainseg3d.core.labels import LABEL_NAMES

    names = {int(k): v for k, v in metadata()["network_data_format"]["outputs"]["pred"]["channel_def"].items()}
    assert names == LABEL_NAMES["brats"]


def test_colour_table_lists_the_metadata_labels():
    rows = [ln.split() for ln in COLOURS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(len(r) == 6 for r in rows), rows
    table = {int(r[0]): r[1].replace("_", " ") for r in rows}
    channel_def = metadata()["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert table == {int(k): v for k, v in channel_def.items()}
    for r in rows:
        assert all(0 <= int(c) <= 255 for c in r[2:])


# ----------------------------------------------------------------------------- network


def raw_network_format() -> dict:
    """The network's own output (3 region logits), described as ``network_def_data_format``."""
    meta = metadata()
    raw = meta["network_def_data_format"]
    assert raw["inputs"] == meta["network_data_format"]["inputs"]
    return raw


def test_verify_net_in_out(bundle_on_path):
    """MONAI's check of the network against the metadata (outputs: the raw region logits)."""
    from monai.bundle import verify_net_in_out

    raw = raw_network_format()["outputs"]["pred"]
    assert raw["num_channels"] == 3 and raw["dtype"] == "float32"
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(META),
        config_file=str(INFER),
        device="cpu",
        any=20,
        bundle_root=str(BUNDLE),
        **{"_meta_#network_data_format#outputs#pred": raw},
    )
    # the label-map description is not what the network itself returns
    with pytest.raises(ValueError):
        verify_net_in_out(net_id="network_def", meta_file=str(META), config_file=str(INFER), device="cpu", any=20)


def test_ckpt_export_torchscript_matches_eager(bundle_on_path, tmp_path):
    from monai.bundle import ConfigParser, ckpt_export

    ts_path = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_path),
        ckpt_file=str(BUNDLE / "models" / "model.pt"),
        meta_file=str(META),
        config_file=str(INFER),
        bundle_root=str(BUNDLE),
    )
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(ts_path), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == metadata()["version"]
    parser = ConfigParser()
    parser.read_config(str(INFER))
    net = parser.get_parsed_content("network_def", instantiate=True)
    net.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    x = torch.zeros(1, 4, 37, 44, 7)
    x[:, :, 5:30, 6:40, :] = torch.randn(1, 4, 25, 34, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager, ts = net(x), scripted(x)
    assert ts.shape == (1, 3, 37, 44, 7)
    torch.testing.assert_close(ts, eager, rtol=1e-4, atol=1e-4)


def test_train_network_is_one_member_of_the_inference_ensemble(bundle_on_path):
    """train.json trains one member (the 2D UNet) and validates it through the inference
    network's SliceWise25D; its ensemble_def is inference.json's network_def, so the members
    it writes assemble into the shipped model.pt."""
    from monai.bundle import ConfigParser

    parsers = []
    for cfg in (INFER, TRAIN):
        parser = ConfigParser()
        parser.read_config(str(cfg))
        parsers.append(parser)
    infer_net = parsers[0].get_parsed_content("network_def", instantiate=True)
    member = parsers[1].get_parsed_content("network_def", instantiate=True)
    ensemble = parsers[1].get_parsed_content("ensemble_def", instantiate=True)
    infer_net.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True))
    ensemble.load_state_dict(infer_net.state_dict())
    assert parsers[1]["ensemble_def"] == parsers[0]["network_def"]
    for net in infer_net.net.nets:
        assert {k: tuple(v.shape) for k, v in member.state_dict().items()} == {k: tuple(v.shape) for k, v in net.state_dict().items()}
    validator = parsers[1].get_parsed_content("validate#network", instantiate=True)
    assert (validator.k, validator.divisible, validator.mask_background) == (infer_net.k, infer_net.divisible, infer_net.mask_background)
    assert parsers[1]["members"] == len(infer_net.net.nets)


def test_bundle_members_writes_each_member_and_train_json_starts_from_one(bundle_on_path, tmp_path, capsys):
    """``brainseg3d bundle members OUT`` writes member i as OUT/fold<i>/final_model.pt (the
    shipped weights, float32); train.json's ``init_weights`` ({fold} replaced) starts the
    member it trains from that file."""
    from monai.bundle import ConfigParser

    from brainseg3d.cli import main

    assert main(["bundle", "members", str(tmp_path / "members")]) == 0
    shipped = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    members = json.loads(TRAIN.read_text())["members"]
    files = sorted((tmp_path / "members").glob("fold*/final_model.pt"))
    assert [f.parent.name for f in files] == [f"fold{i}" for i in range(members)]
    assert str(files[0]) in capsys.readouterr().out
    fold = members - 1
    member = torch.load(files[fold], map_location="cpu", weights_only=True)
    for k, v in member.items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, shipped[f"net.nets.{fold}.{k}"].float())
    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    train = json.loads(TRAIN.read_text())
    parser.update({"init_weights": str(tmp_path / "members" / "fold{fold}" / "final_model.pt"), "fold": fold, "device": "$torch.device('cpu')"})
    net = parser.get_parsed_content("network", instantiate=True)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, member[k])
    assert train["init_weights"] is None  # the shipped train.json runs anywhere: from scratch unless given
    assert main(["bundle", "members", str(tmp_path / "x"), "--bundle", str(tmp_path)]) == 1  # no model.pt: an error line
    assert "model.pt" in capsys.readouterr().err


def test_train_json_is_the_shipped_recipe():
    """The recipe in train.json is the one that made the shipped weights: the run configs of the
    shipped folds (the ``cv_record`` of metadata.json, fold*/config.yaml, the loss named as the bundle's
    copy of the core class) and the package's recipe.yaml (optimizer, schedule); the shipped
    members are a soup (`cv average`), and train.json says so and of which runs."""
    import yaml

    from brainseg3d.bundle import RECIPE_KEYS, recipe_from_run

    train = json.loads(TRAIN.read_text())
    cv = SHIPPED_RECORD
    recipe, _ = recipe_from_run(cv)
    for key in RECIPE_KEYS:
        assert train[key] == recipe[key], key
    averaged = json.loads((cv / "fold0" / "summary.json").read_text())["averaged_from"]
    assert train["_comment_soup"] == recipe["_comment_soup"] and "cv average" in train["_comment_soup"]
    assert all(str(Path(f).parent.parent) in train["_comment_soup"] for f in averaged)
    fold0 = yaml.safe_load((cv / "fold0" / "config.yaml").read_text())
    net = {k: v for k, v in fold0["network"].items() if k != "_target_"}
    assert train["unet"] == net and train["k"] == fold0["k"]
    base = yaml.safe_load((REPO / "brainseg3d" / "training" / "recipe.yaml").read_text())
    loss = dict(fold0.get("loss", base["loss"]))
    loss["_target_"] = loss["_target_"].replace("brainseg3d.core.", "scripts.")
    assert train["loss"] == loss and train["loss"]["_target_"] == "scripts.training.DiceBCELoss"
    assert train["optimizer"]["_target_"] == base["optimizer"]["_target_"] and train["lr_scheduler"]["_target_"] == base["lr_scheduler"]["_target_"]
    assert train["lr_scheduler"]["T_max"] == "@epochs" and train["optimizer"]["lr"] == "@learning_rate"
    assert train["optimizer"]["weight_decay"] == "@weight_decay"


def test_bundle_datalist_is_the_pool_the_weights_were_trained_on(tmp_path):
    """configs/datalist.json holds the same cases and folds as data_lists/pool60.json, each
    root a sub-folder of dataset_dir (or moved with --roots); the fold's lists follow."""
    from monai.bundle import ConfigParser

    shipped = json.loads((CONFIGS / "datalist.json").read_text())
    pool = json.loads((REPO / "data_lists" / "pool60.json").read_text())
    assert shipped["training"] == pool["training"]
    assert shipped["roots"] == {name: name for name in pool["roots"]}
    for name in pool["roots"]:  # a dataset_dir holding one folder per root
        (tmp_path / name).mkdir()
    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(tmp_path), "roots": {"extra": str(tmp_path / "moved")}})
    assert parser.get_parsed_content("pool_roots") == {"brats2018": str(tmp_path / "brats2018"), "extra": str(tmp_path / "moved")}


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory):
    """A two-case pool datalist (folds 0 and 1) whose root is the shared BraTS 2018 folder,
    under dataset_dir SHARED."""
    need_case()
    pool = json.loads((REPO / "data_lists" / "pool60.json").read_text())
    items = [dict(i) for i in pool["training"] if i["root"] == "brats2018"][:2]
    for fold, item in enumerate(items):
        item["fold"] = fold
    path = tmp_path_factory.mktemp("pool") / "tiny_pool.json"
    path.write_text(json.dumps({"roots": {"brats2018": "brats2018"}, "training": items}))
    return path


def test_bundle_training_data_is_the_trainers(tiny_pool, tmp_path):
    """Same volumes, same slices per epoch: train.json's dataset and the package trainer's
    (``brainseg3d cv train``) on the same pool and fold."""
    from monai.bundle import ConfigParser

    from brainseg3d.training.trainer import TrainingRun

    shipped = json.loads(TRAIN.read_text())  # the shipped recipe's sampling: its seed, case balance and view
    overrides = {"data#datalist": str(tiny_pool), "seed": shipped["seed"], "data#case_balance": shipped["case_balance"],
                 "views": shipped["views"]}
    run = TrainingRun([str(REPO / "configs" / "unet25d_pool.yaml")], tmp_path / "run", None, None, None, None, "cpu",
                      overrides, None, False, 0, {"brats2018": str(SHARED / "brats2018")})
    run.configure()
    run.build_data()
    sys.path.insert(0, str(BUNDLE))
    try:
        parser = ConfigParser()
        parser.read_config(str(TRAIN))
        parser.update({"bundle_root": str(BUNDLE), "data_list_file_path": str(tiny_pool), "dataset_dir": str(SHARED), "fold": 0})
        ds = parser.get_parsed_content("train#dataset")
        assert [it["case"] for it in parser.get_parsed_content("val_datalist")] == [it["case"] for it in run.va_items]
    finally:
        sys.path.remove(str(BUNDLE))
        for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            del sys.modules[name]
    assert len(ds.volumes) == len(run.tr_ds.volumes) == 1
    torch.testing.assert_close(torch.as_tensor(ds.volumes[0]["image"]).as_subclass(torch.Tensor), run.tr_ds.volumes[0]["image"].as_subclass(torch.Tensor))
    assert torch.equal(torch.as_tensor(ds.volumes[0]["label"]).as_subclass(torch.Tensor).to(torch.uint8), run.tr_ds.volumes[0]["label"].as_subclass(torch.Tensor))
    for epoch in (0, 3):
        ds.resample(epoch)
        run.tr_ds.resample(epoch)
        assert ds.index == run.tr_ds.index and len(ds) > 0
    assert (ds.k, ds.tumour_ratio, ds.seed) == (run.tr_ds.k, run.tr_ds.tumour_ratio, run.tr_ds.seed)
    assert [type(t).__name__ for t in ds.transform.transforms] == [type(t).__name__ for t in run.tr_ds.transform.transforms]


# ----------------------------------------------------------------------------- workflows


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", ["inference", "train", "evaluate", "multi_gpu_train"])
def test_workflow_properties(name, case_inputs, tiny_datalist, tiny_pool, monkeypatch, bundle_on_path):
    """``ConfigWorkflow.check_properties``: no required property missing, no optional one misnamed.

    The properties are instantiated (datasets without caching), so each workflow is initialized
    on the real case first; multi_gpu_train.json in a one-process gloo group.
    """
    from monai.bundle import ConfigWorkflow

    if name == "inference":
        configs, workflow_type, overrides = [INFER], "infer", {"dataset_dir": str(case_inputs)}
    else:
        configs = {"train": [TRAIN], "evaluate": [TRAIN, EVALUATE], "multi_gpu_train": [TRAIN, MULTI_GPU]}[name]
        workflow_type = "train"
        overrides = {"data_list_file_path": str(tiny_pool), "dataset_dir": str(SHARED), "cache_rate": 0.0, "num_workers": 0}
        if name == "evaluate":  # scores a MONAI datalist's validation list
            overrides.update(data_list_file_path=str(tiny_datalist), dataset_dir=str(SHARED / "brats2018"))
    if name == "multi_gpu_train":
        for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
            monkeypatch.setenv(key, value)
    workflow = ConfigWorkflow(
        config_file=[str(c) for c in configs],
        meta_file=str(META),
        logging_file=False,
        workflow_type=workflow_type,
        bundle_root=str(BUNDLE),
        **overrides,
    )
    workflow.initialize()
    try:
        missing = workflow.check_properties()
        assert missing == [], f"missing or misnamed properties: {missing}"
        assert workflow.version == metadata()["version"]
    finally:
        workflow.finalize()


def test_logging_conf_passes_monai_checks():
    """``monai.bundle run`` applies configs/logging.conf only if MONAI's allow-list accepts it."""
    from monai.bundle import workflows

    checker = getattr(workflows, "_reject_executable_logging_config", None)
    if checker is None:
        pytest.skip("this MONAI has no logging.conf allow-list")
    assert "StreamHandler" in checker(str(CONFIGS / "logging.conf"))


# ----------------------------------------------------------------------------- real runs


@pytest.fixture(scope="session")
def case_inputs(tmp_path_factory):
    """A folder of inputs: the case's four files, and the same case as one 4D channel-last NIfTI."""
    need_case()
    inputs = tmp_path_factory.mktemp("bundle_inputs")
    (inputs / CASE_ID).mkdir()
    for m in MODALITIES:  # file links in a real folder (discovery does not follow folder links)
        (inputs / CASE_ID / f"{CASE_ID}_{m}.nii.gz").symlink_to(CASE_DIR / f"{CASE_ID}_{m}.nii.gz")
    imgs = [nib.load(str(CASE_DIR / f"{CASE_ID}_{m}.nii.gz")) for m in MODALITIES]
    stacked = np.stack([np.asarray(i.dataobj) for i in imgs], axis=-1)  # (X, Y, Z, 4) as NIfTI stores it
    (inputs / "stacked").mkdir()
    nib.save(nib.Nifti1Image(stacked, imgs[0].affine, imgs[0].header), str(inputs / "stacked" / f"{STACK_ID}.nii.gz"))
    return inputs


@pytest.fixture(scope="session")
def bundle_outputs(case_inputs, tmp_path_factory):
    """``python -m monai.bundle run`` inference on the case folder and on its 4D stack, once.

    ``--views axial`` overrides the shipped three views from the command line (a third of the
    network time); the Predictor below reads the same view. The shipped three-view default runs
    end to end in .ci/monailabel_check.sh (``monai.bundle run`` and MONAI Label, same mask)."""
    root = tmp_path_factory.mktemp("bundle_run")
    out = root / "out"
    run_bundle(bundle_cmd([INFER], dataset_dir=case_inputs, output_dir=out, views="axial"), cwd=root)
    return out


@pytest.fixture(scope="session")
def predictor_mask():
    need_case()
    from brainseg3d.core.cases import discover
    from brainseg3d.inference.predictor import Predictor

    (case,) = discover(CASE_DIR)
    return Predictor(precision="fp32", views="axial").segment_case(case).label


@pytest.mark.slow
def test_bundle_run_writes_uint8_mask_on_the_input_grid(bundle_outputs):
    ref = nib.load(str(CASE_DIR / f"{CASE_ID}_t1.nii.gz"))
    out = nib.load(str(bundle_outputs / f"{CASE_ID}.nii.gz"))
    assert out.get_data_dtype() == np.uint8
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    values = set(np.unique(np.asarray(out.dataobj)).tolist())
    assert values <= label_values() and len(values) > 1, values  # some tumour is found


@pytest.mark.slow
def test_bundle_run_equals_predictor(bundle_outputs, predictor_mask):
    out = np.asarray(nib.load(str(bundle_outputs / f"{CASE_ID}.nii.gz")).dataobj)
    np.testing.assert_array_equal(out, np.asarray(predictor_mask.dataobj))


@pytest.mark.slow
def test_bundle_run_accepts_a_4d_channel_last_nifti(bundle_outputs):
    path = bundle_outputs / f"{STACK_ID}.nii.gz"
    assert path.is_file(), sorted(p.name for p in bundle_outputs.iterdir())
    out = nib.load(str(path))
    ref = nib.load(str(bundle_outputs / f"{CASE_ID}.nii.gz"))
    assert out.get_data_dtype() == np.uint8 and out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(ref.dataobj))


@pytest.fixture(scope="session")
def tiny_datalist(tmp_path_factory):
    """One real case for training and validation (paths relative to the shared BraTS folder)."""
    need_case()
    doc = json.loads((REPO / "data_lists" / "brats2018.json").read_text())
    (item,) = [i for i in doc["validation"] if i["case"] == CASE_ID]
    path = tmp_path_factory.mktemp("datalist") / "tiny.json"
    path.write_text(json.dumps({"training": [item], "validation": [item]}))
    return path


@pytest.mark.slow
def test_train_json_trains_a_member_and_assembles_the_ensemble(tiny_pool, tmp_path):
    """``monai.bundle run`` train.json on fold 0: the member's final weights in models/fold0/,
    an epoch checkpoint, and, the other members being there, models/model.pt rebuilt as the
    ensemble of all (the shipped model.pt's keys and shapes, the other members unchanged)."""
    ckpt = tmp_path / "models"
    shipped = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    members = json.loads(TRAIN.read_text())["members"]
    others = range(1, members)
    for i in others:  # the other members, as earlier fold runs would have left them
        (ckpt / f"fold{i}").mkdir(parents=True)
        prefix = f"net.nets.{i}."
        torch.save({k[len(prefix):]: v.float() for k, v in shipped.items() if k.startswith(prefix)}, ckpt / f"fold{i}" / "model.pt")
    cmd = bundle_cmd([TRAIN], data_list_file_path=tiny_pool, dataset_dir=SHARED, fold=0, epochs=1, val_interval=1, batch_size=4, ckpt_dir=ckpt)
    proc = run_bundle(cmd, cwd=tmp_path)
    assert "val_mean_dice" in proc.stdout + proc.stderr
    member = torch.load(ckpt / "fold0" / "model.pt", map_location="cpu", weights_only=True)
    assert list(ckpt.joinpath("fold0").glob("epoch_checkpoint*.pt"))
    state = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in shipped.items()}
    for k, v in member.items():
        torch.testing.assert_close(state[f"net.nets.0.{k}"].float(), v.half().float())
    for k, v in shipped.items():
        if k.startswith(tuple(f"net.nets.{i}." for i in others)):
            torch.testing.assert_close(state[k].float(), v.float())


@pytest.mark.slow
def test_multi_gpu_train_json_under_torchrun(tmp_path):
    """train.json + multi_gpu_train.json, two processes (gloo on CPU): the ranks train and
    validate together, and rank 0 alone writes the epoch checkpoint and the member's weights."""
    need_case()
    pool = json.loads((REPO / "data_lists" / "pool60.json").read_text())
    items = [dict(i) for i in pool["training"] if i["root"] == "brats2018"][:4]
    for n, item in enumerate(items):  # two cases per fold: each rank validates one
        item["fold"] = n % 2
    datalist = tmp_path / "pool4.json"
    datalist.write_text(json.dumps({"roots": {"brats2018": "brats2018"}, "training": items}))
    ckpt = tmp_path / "models"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "monai.bundle", "run",
           "--config_file", str([str(TRAIN), str(MULTI_GPU)]), "--bundle_root", str(BUNDLE), "--data_list_file_path", str(datalist),
           "--dataset_dir", str(SHARED), "--epochs", "1", "--val_interval", "1", "--ckpt_dir", str(ckpt)]
    proc = run_bundle(cmd, cwd=tmp_path)
    assert "val_mean_dice" in proc.stdout + proc.stderr
    assert (ckpt / "fold0" / "model.pt").is_file() and len(list((ckpt / "fold0").glob("epoch_checkpoint*.pt"))) == 1
    member = torch.load(ckpt / "fold0" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in member)  # the bare network, not the DDP wrapper


@pytest.mark.slow
def test_evaluate_json_scores_and_writes_the_inference_mask(tiny_datalist, bundle_outputs, tmp_path):
    out = tmp_path / "eval"
    # the views of the inference run it is compared with (evaluate.json reads the shipped three by default)
    cmd = bundle_cmd([TRAIN, EVALUATE], data_list_file_path=tiny_datalist, dataset_dir=SHARED / "brats2018", num_workers=0, output_dir=out,
                     views="axial")
    run_bundle(cmd, cwd=tmp_path)
    with open(out / "metrics.csv") as f:
        scores = {row[0]: float(row[1]) for row in csv.reader(f) if row}
    assert set(scores) == {"val_mean_dice", "val_dice_wt", "val_dice_tc", "val_dice_et"}
    assert all(0.0 <= v <= 1.0 for v in scores.values()), scores
    saved = nib.load(str(out / f"{CASE_ID}.nii.gz"))
    assert saved.get_data_dtype() == np.uint8
    inferred = nib.load(str(bundle_outputs / f"{CASE_ID}.nii.gz"))
    np.testing.assert_allclose(saved.affine, inferred.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), np.asarray(inferred.dataobj))


def test_bundle_config_builds_the_core_loss(bundle_on_path):
    """A train.json loss naming the bundle's copy of a core loss (what `cv export` writes for such
    a run) is built by MONAI's ConfigParser with the bundle's scripts, as `monai.bundle run` does."""
    from monai.bundle import ConfigParser

    parser = ConfigParser({"loss": {"_target_": "scripts.training.DiceBCELoss", "batch_weight": 0.5}})
    loss = parser.get_parsed_content("loss")
    assert type(loss).__name__ == "DiceBCELoss" and loss.batch_weight == 0.5
    y = torch.zeros(2, 3, 8, 8)
    y[:, :, 2:6, 2:6] = 1
    assert float(loss(torch.where(y > 0, 20.0, -20.0), y)) < 0.01
    # the shipped train.json's loss with the override the card names for the region-weighted ingredient
    parser = ConfigParser(json.loads(TRAIN.read_text()))
    parser.update({"loss#region_weights": [1, 1.5, 2]})
    weighted = parser.get_parsed_content("loss", instantiate=True)
    torch.testing.assert_close(weighted.region_weights, torch.tensor([2 / 3, 1.0, 4 / 3]))
