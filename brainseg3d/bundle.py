"""Put trained weights into the MONAI bundle: ``models/model.pt`` and TorchScript ``models/model.ts``.

``brainseg3d export RUN_DIR/best_model.pt`` wraps the trained 2D network in the bundle's
``network_def`` (the 3D-in / 3D-out :class:`SliceWise25D`), checks the shapes with MONAI's
``verify_net_in_out`` logic, saves the state dict and exports TorchScript with
``monai.bundle.ckpt_export``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch

from brainseg3d.core.training import _atomic_save, assemble_ensemble, load_member
from brainseg3d.inference.predictor import DEFAULT_BUNDLE, load_bundle_network

__all__ = ["export_weights", "extract_members", "export_ensemble", "export_torchscript", "ensemble_network_def", "VENDORED", "sync_bundle",
           "network_from_run", "recipe_from_run", "bundle_datalist"]

#: the package modules the bundle carries verbatim in ``scripts/`` (so it runs with MONAI alone):
#: bundle path -> package path: all of :mod:`brainseg3d.core`, whose modules import only torch,
#: MONAI, numpy, nibabel and each other (``checks`` imports ``.cases``, which is
#: ``scripts/cases.py`` in the bundle; ``tests/test_bundle.py`` and ``tests/core/test_core.py`` check the rule).
VENDORED = {
    "scripts/components.py": "core/components.py",
    "scripts/cases.py": "core/cases.py",
    "scripts/checks.py": "core/checks.py",
    "scripts/labels.py": "core/labels.py",
    "scripts/training.py": "core/training.py",
}


def sync_bundle(bundle: str | os.PathLike | None = None, check: bool = False) -> list[str]:
    """Copy the :data:`VENDORED` package modules into the bundle's ``scripts/`` and check its
    version (``configs/metadata.json``: the version must be the newest entry of its changelog).

    Args:
        bundle: bundle folder (default: the shipped one).
        check: only report what differs; change nothing.

    Returns:
        The bundle paths that differed (copied unless ``check``).

    Raises:
        ValueError: the bundle's version has no changelog entry, or is not the newest one.
    """
    import json

    bundle = Path(bundle or DEFAULT_BUNDLE)
    package = Path(__file__).parent
    drifted = []
    for dst, src in VENDORED.items():
        source, copy = package / src, bundle / dst
        if not copy.exists() or copy.read_bytes() != source.read_bytes():
            drifted.append(dst)
            if not check:
                part = copy.with_suffix(".py.part")
                part.write_bytes(source.read_bytes())
                os.replace(part, copy)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    versions = list(meta.get("changelog", {}))
    if meta.get("version") not in versions:
        raise ValueError(f"{bundle.name}: version {meta.get('version')!r} has no entry in configs/metadata.json's changelog")
    newest = max(versions, key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))
    if meta["version"] != newest:
        raise ValueError(f"{bundle.name}: version {meta['version']} is older than its changelog's newest entry {newest}")
    return drifted


def export_weights(checkpoint: str | os.PathLike, bundle: str | os.PathLike | None = None, torchscript: bool = True) -> Path:
    """Write ``models/model.pt`` (and ``model.ts``) of ``bundle`` from a training checkpoint.

    Args:
        checkpoint: ``best_model.pt`` of a training run (state dict of the 2D network), or a
            state dict of the whole bundle network.
        bundle: bundle folder (default: the shipped one).
        torchscript: also export ``models/model.ts``.
    """
    bundle = Path(bundle or DEFAULT_BUNDLE)
    net, parser = load_bundle_network(bundle, weights=False)
    if parser.get("members") is not None:  # an ensemble bundle: the checkpoint becomes its only member
        return export_ensemble([checkpoint], bundle, torchscript=torchscript, half=False)
    state = load_member(checkpoint)
    if not any(k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in state.items()}
    net.load_state_dict(state)
    out = bundle / "models" / "model.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".pt.part")
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, out)
    sync_bundle(bundle)  # the scripts/ the network is built from are the package's
    if torchscript:
        export_torchscript(bundle)
    return out


def extract_members(out: str | os.PathLike, bundle: str | os.PathLike | None = None) -> list[Path]:
    """Write each ensemble member of ``bundle`` as ``out/fold<i>/final_model.pt`` (float32 state
    dict of the 2D network), the layout of a ``brainseg3d cv train`` run, so an experiment can
    start each fold from the shipped member of that fold (``train#init_weights``).

    Raises:
        ValueError: when the bundle is not an ensemble (it has no ``members``).
    """
    bundle = Path(bundle or DEFAULT_BUNDLE)
    state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    members = sorted({int(k.split(".")[2]) for k in state if k.startswith("net.nets.")})
    if not members:
        raise ValueError(f"{bundle}: models/model.pt holds no ensemble members (net.nets.<i>.*)")
    written = []
    for i in members:
        prefix = f"net.nets.{i}."
        member = {k[len(prefix):]: (v.float() if v.is_floating_point() else v) for k, v in state.items() if k.startswith(prefix)}
        path = Path(out) / f"fold{i}" / "final_model.pt"
        _atomic_save(member, path)
        written.append(path)
    return written


def export_torchscript(bundle: str | os.PathLike | None = None) -> Path:
    """``monai.bundle.ckpt_export``: ``models/model.pt`` -> ``models/model.ts`` (with the configs inside)."""
    from monai.bundle import ckpt_export

    bundle = Path(bundle or DEFAULT_BUNDLE).resolve()
    import sys

    if str(bundle) not in sys.path:
        sys.path.insert(1, str(bundle))
    cfg = bundle / "configs"
    ckpt_export(
        net_id="network_def",
        filepath=str(bundle / "models" / "model.ts"),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(cfg / "metadata.json"),
        config_file=str(cfg / "inference.json"),
        bundle_root=str(bundle),
    )
    return bundle / "models" / "model.ts"


#: the network class the bundle's ensemble is built from (``ensemble_network_def``)
BUNDLE_NETWORK = "monai.networks.nets.UNet"


def network_from_run(run: str | os.PathLike) -> tuple[dict, int]:
    """The network of a CV run as the bundle builds it: ``(UNet keyword arguments, k)`` from its
    folds' ``config.yaml`` (the config as each fold ran), so ``cv export`` writes the run's own
    architecture into the bundle, never the one the bundle had.

    Raises:
        FileNotFoundError: no ``fold*/config.yaml``.
        ValueError: the folds differ in network or K, or the network is not a MONAI UNet (the
            bundle's ensemble, ``ensemble_network_def``, is built from that class).
    """
    import yaml

    configs = sorted(Path(run).glob("fold*/config.yaml"))
    if not configs:
        raise FileNotFoundError(f"no fold*/config.yaml under {run}")
    found, net, k = set(), None, None
    for path in configs:
        cfg = yaml.safe_load(path.read_text())
        net, k = dict(cfg.get("network") or {}), int(cfg.get("k", 1))  # the config's own key order
        found.add((json.dumps(net, sort_keys=True), k))
    if len(found) > 1:
        raise ValueError(f"{run}: the folds were trained with different networks or K; export folds of one architecture")
    target = net.pop("_target_", None)
    if target != BUNDLE_NETWORK:
        raise ValueError(f"{run}: the bundle's ensemble is built from {BUNDLE_NETWORK}; this run trains {target}")
    return net, k


#: train.json key -> the run config's key (MONAI ``#`` path): the recipe ``cv export`` writes
RECIPE_KEYS = {
    "seed": "seed",
    "views": "views",
    "epochs": "train#max_epochs",
    "val_interval": "train#val_interval",
    "learning_rate": "train#lr",
    "weight_decay": "train#weight_decay",
    "batch_size": "train#batch_size",
    "tumour_ratio": "data#tumour_ratio",
    "case_balance": "data#case_balance",
    "data": "data#patch",
    "augmentation": "augmentation",
    "loss": "loss",
}


#: package module -> the bundle's copy, as dotted ``_target_`` prefixes (from :data:`VENDORED`)
_VENDORED_TARGETS = {"brainseg3d." + pkg[:-3].replace("/", ".") + ".": bundle[:-3].replace("/", ".") + "."
                     for bundle, pkg in VENDORED.items()}


def _bundle_targets(node):
    """``node`` with every ``_target_`` in a :data:`VENDORED` package module
    (``brainseg3d.core.training.X``) pointing at the bundle's copy (``scripts.training.X``)."""
    if isinstance(node, list):
        return [_bundle_targets(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _bundle_targets(v) for k, v in node.items()}
    target = out.get("_target_")
    for pkg, bundle in _VENDORED_TARGETS.items():
        if isinstance(target, str) and target.startswith(pkg):
            out["_target_"] = bundle + target[len(pkg):]
    return out


def recipe_from_run(run: str | os.PathLike) -> tuple[dict, Path | None]:
    """The training recipe of a CV run as the bundle's ``train.json`` entries, and its pool
    datalist, from the folds' ``config.yaml`` (the config as each fold ran).

    Returns:
        ``(entries, datalist)``: ``entries`` maps train.json keys (:data:`RECIPE_KEYS`) to the
        run's values; where the folds differ (e.g. one fold trained for fewer epochs), the
        largest value is written and ``_comment_recipe`` says which folds differ;
        ``_comment_init_weights_recipe`` says whether the members started from trained weights
        (``train#init_weights``; train.json's own ``init_weights`` stays null so that it runs
        anywhere).
        ``datalist`` is the run's pool datalist (``None`` when it is not found).

    Raises:
        FileNotFoundError: no ``fold*/config.yaml``.
        ValueError: the run is not a 2.5D run (the bundle trains 2.5D), or it drew slices by
            source (``data#source_weights``, which train.json does not express).
    """
    import yaml

    configs = sorted(Path(run).glob("fold*/config.yaml"))
    if not configs:
        raise FileNotFoundError(f"no fold*/config.yaml under {run}")
    from brainseg3d.training.trainer import RECIPE

    default_loss = yaml.safe_load(RECIPE.read_text())["loss"]  # what the trainer used where a run config lacks it
    per_fold = []
    starts = set()  # where the folds started (train#init_weights)
    datalist = None
    for path in configs:
        cfg = yaml.safe_load(path.read_text())
        if cfg.get("mode", "2.5d") != "2.5d":
            raise ValueError(f"{path}: mode {cfg.get('mode')!r}; the bundle's train.json trains 2.5D")
        if (cfg.get("data") or {}).get("source_weights"):  # a key train.json cannot express: refuse rather than drop it
            raise ValueError(f"{path}: data#source_weights; the bundle's train.json draws slices without regard to source")
        values = {}
        for key, where in RECIPE_KEYS.items():
            node = cfg
            for part in where.split("#"):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                values[key] = {"patch": node} if key == "data" else node
        values.setdefault("views", "axial")  # the trainer's default (configs written before the key existed)
        values.setdefault("case_balance", False)  # ditto
        values.setdefault("loss", default_loss)  # recipe.yaml's (configs written before the run config kept it)
        values = _bundle_targets(values)  # brainseg3d.core.X -> the bundle's verbatim copy scripts.X
        per_fold.append((path.parent.name, values))
        start = (cfg.get("train") or {}).get("init_weights")
        if start:
            starts.add(str(start))
        listed = (cfg.get("data") or {}).get("datalist")
        if listed and datalist is None:
            for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
                if (base / listed).is_file():
                    datalist = base / listed
                    break
    entries, differ = dict(per_fold[0][1]), []
    for key in entries:
        seen = {json.dumps(v.get(key), sort_keys=True) for _, v in per_fold}
        if len(seen) > 1:
            differ.append(f"{key}: " + ", ".join(f"{name} {v.get(key)}" for name, v in per_fold))
            if all(isinstance(v.get(key), (int, float)) for _, v in per_fold):
                entries[key] = max(v[key] for _, v in per_fold)
    if differ:
        entries["_comment_recipe"] = "the folds of the exported run differ in: " + "; ".join(differ)
    # train.json keeps init_weights null (it runs anywhere, from scratch); the comment says where the shipped members started
    entries["_comment_init_weights_recipe"] = (
        f"the shipped members did not start from scratch: each fold started from {', '.join(sorted(starts))} of the run that made them "
        "(its own fold's earlier model, widened to this K where it had fewer neighbours); --init_weights with such files does the same"
        if starts else "the shipped members were trained from scratch (init_weights null)")
    # a run made by `brainseg3d cv average`: the members are a mean of several runs' weights, this recipe is one of them
    averaged = [json.loads(p.read_text()).get("averaged_from") for p in sorted(Path(run).glob("fold*/summary.json"))]
    if any(averaged):
        sources = [str(Path(f).parent.parent) for f in next(a for a in averaged if a)]
        entries["_comment_soup"] = (
            f"the shipped members are, fold by fold, the mean of the weights of {len(sources)} runs ({', '.join(sources)}; "
            "brainseg3d cv average); this recipe is that of the last of them (see _comment_init_weights_recipe for where it started)")
    for key in ("epochs", "val_interval", "batch_size", "seed"):
        if key in entries:
            entries[key] = int(entries[key])
    for key in ("learning_rate", "weight_decay", "tumour_ratio"):
        if key in entries:
            entries[key] = float(entries[key])
    return entries, datalist


def bundle_datalist(pool: str | os.PathLike) -> dict:
    """A pool datalist as the bundle ships it (``configs/datalist.json``): the same cases and
    folds, every root named by its own name, i.e. a sub-folder of train.json's ``dataset_dir``
    (``--dataset_dir /data --roots '{"extra": "/elsewhere"}'`` moves them)."""
    doc = json.loads(Path(pool).read_text())
    doc = dict(doc)
    doc["roots"] = {name: name for name in (doc.get("roots") or {})}
    return doc


def ensemble_network_def(unet: dict, members: int) -> dict:
    """The bundle config entries of an ensemble of ``members`` 2D networks built from ``unet``
    (keyword arguments of :class:`monai.networks.nets.UNet`) behind one SliceWise25D, which
    reads the config's ``views``."""
    return {
        "members": int(members),
        "unet": unet,
        "network_def": {
            "_target_": "scripts.components.SliceWise25D",
            "net": {
                "_target_": "scripts.components.ProbabilityMean",
                # the iterable is evaluated in the expression's own scope, where @unet is visible
                "nets": "$[monai.networks.nets.UNet(**u) for u in [@unet] * @members]",
            },
            "k": "@k",
            "slice_batch": "@slice_batch",
            "bf16": "@bf16",
            "views": "@views",
        },
    }


def _with_network(cfg: dict, entries: dict, extra: dict) -> dict:
    """``cfg`` with the ensemble entries (``members``, ``unet``, ``network_def``) and ``extra``
    keys in place of the old ones, inserted where ``network_def`` was (the order is kept)."""
    replaced = {"members", "unet", "network_def", *extra}
    new = {}
    for key, value in cfg.items():
        if key == "network_def":
            new.update({"members": entries["members"], "unet": entries["unet"], **extra, "network_def": entries["network_def"]})
        elif key not in replaced:
            new[key] = value
    return new


def _write_json(path: Path, doc: dict) -> None:
    import json

    part = path.with_suffix(".json.part")
    part.write_text(json.dumps(doc, indent=4) + "\n")
    os.replace(part, path)


def _post_entries(post: dict) -> dict:
    """Bundle config entries of a post-processing setting (thresholds as floats, switches as
    booleans, the other rules as ints)."""
    out = {}
    for k, v in post.items():
        out[k] = ([float(t) for t in v] if k == "thresholds" else float(v) if k == "min_fraction"
                  else bool(v) if k == "fill_core_holes" else int(v))
    return out


def export_ensemble(checkpoints, bundle: str | os.PathLike | None = None, torchscript: bool = True,
                    postprocessing: dict | None = None, unet: dict | None = None, half: bool = True, k: int | None = None,
                    recipe: dict | None = None, datalist: str | os.PathLike | None = None,
                    views: Sequence[str] | None = None) -> Path:
    """Make the bundle's network the mean of several trained 2D networks (e.g. the CV folds).

    Rewrites ``network_def`` (and ``members``, ``unet``, the post-processing setting) in the
    bundle's ``inference.json``, writes ``models/model.pt`` and, by default, TorchScript.

    Args:
        checkpoints: one state dict file of the 2D network per member (``final_model.pt``).
        bundle: bundle folder (default: the shipped one).
        torchscript: also export ``models/model.ts``.
        postprocessing: ``{"thresholds": [...], "min_component": N, "min_fraction": F, "et_to_necrosis": M,
            "fill_core_holes": B}`` to record.
        unet: UNet keyword arguments (default: the ones the bundle has now; :func:`network_from_run`
            gives a run's).
        k: neighbour slices on each side (default: the bundle's).
        recipe: train.json entries of the training recipe (:func:`recipe_from_run`), so the
            bundle trains as its weights were trained.
        datalist: the pool datalist the members were trained on, shipped as
            ``configs/datalist.json`` (:func:`bundle_datalist`).
        half: store the weights in ``model.pt`` as float16 (half the size in git; loading
            casts them back to the float32 network; TorchScript stays float32).
        views: the slice views inference averages (``inference.json`` and ``evaluate.json``'s
            ``views``; default: the bundle's, or axial). train.json keeps the views the
            members are trained on (the recipe's).
    """
    import json

    bundle = Path(bundle or DEFAULT_BUNDLE)
    missing = [str(c) for c in checkpoints if not Path(c).is_file()]
    if missing:
        raise FileNotFoundError(f"member weights not found: {', '.join(missing)}")
    cfg_path = bundle / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    if unet is None:
        unet = cfg.get("unet") or {k: v for k, v in cfg["network_def"]["net"].items() if k != "_target_"}
    entries = ensemble_network_def(unet, len(checkpoints))
    if k is not None:
        cfg["k"] = int(k)
    views = list(views or cfg.get("views") or ["axial"])
    cfg["views"] = views  # in its place (beside k), or added
    _write_json(cfg_path, _with_network(cfg, entries, _post_entries(postprocessing) if postprocessing else {}))
    train_cfg = bundle / "configs" / "train.json"
    if train_cfg.exists():  # train.json trains one member of the same ensemble, by the run's recipe
        train = json.loads(train_cfg.read_text())
        if k is not None:
            train["k"] = int(k)
        train.pop("_comment_recipe", None)
        train.pop("_comment_soup", None)  # written again by the recipe of a run made by `cv average`
        train.update({"members": entries["members"], "unet": entries["unet"], "ensemble_def": entries["network_def"], **(recipe or {})})
        train.setdefault("views", "axial")
        _write_json(train_cfg, train)
    if datalist is not None:
        _write_json(bundle / "configs" / "datalist.json", bundle_datalist(datalist))
    evaluate = bundle / "configs" / "evaluate.json"
    if evaluate.exists():  # evaluation reads the views and post-processes as inference does
        _write_json(evaluate, {**json.loads(evaluate.read_text()), **(_post_entries(postprocessing) if postprocessing else {}), "views": views})
    net, _ = load_bundle_network(bundle, weights=False)
    out = bundle / "models" / "model.pt"
    assemble_ensemble(checkpoints, net, out, half=half)  # the one assembly, as train.json's
    sync_bundle(bundle)  # the scripts/ the network is built from are the package's
    if torchscript:
        export_torchscript(bundle)
    return out
