"""Cross-validation on a pool datalist: train every fold, score the out-of-fold predictions.

``brainseg3d cv train CONFIG`` trains one model per fold (:func:`train_folds`); each run
resumes from its last epoch checkpoint after an interruption and is skipped once done. At
the end of a fold its *final* weights (never an epoch chosen on the held-out cases) predict
the fold's held-out cases into ``<run>/fold<i>/oof/<case>.npz`` (sigmoid probabilities of
WT / TC / ET and the reference regions, in the preprocessed space: RAS, 1 mm, cropped to
the brain).

``brainseg3d cv score RUN`` (:func:`score_run`) scores every case of the pool from the fold
that held it out, per volume (MONAI Dice and HD95, BraTS empty-region convention), and
reports mean and standard deviation overall and per source (adult glioma / BraTS-Africa),
with one row per case in CSV and JSON. Post-processing is chosen on these out-of-fold
predictions, the nnU-Net way (:func:`choose_postprocessing`): per-region thresholds, the
smallest tumour component kept (in voxels, and as a fraction of the largest component), and
the BraTS rule that turns an enhancing tumour smaller than a threshold into necrosis. Every
choice is a grid searched on all out-of-fold cases; the figures reported for the chosen
setting are therefore slightly optimistic, and the table says so. The honest figure is the
nested one (:func:`nested_postprocessing`): each fold scored with the setting chosen on the
other folds only.

Scores in the preprocessed space equal scores on the input grid for 1 mm isotropic inputs
(every BraTS release): orientation is a permutation and the crop removes only voxels outside
the brain, where the mask is zero.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from monai.utils import ensure_tuple

from brainseg3d.data.pool import SOURCES
from brainseg3d.evaluation.metrics import binary_dice, nest_regions, region_scores
from brainseg3d.io import atomic_path, label_volumes_ml, write_json
from brainseg3d.inference.postprocessing import postprocess_regions
from brainseg3d.core.components import fill_plane_holes, small_components
from brainseg3d.core.labels import REGIONS
from brainseg3d.core.training import widen_neighbour_channels
from brainseg3d.preprocessing.transforms import RegionsToLabels

__all__ = ["train_folds", "average_runs", "predict_out_of_fold", "view_out_of_fold", "load_oof", "score_oof", "summarize", "choose_postprocessing", "nested_postprocessing", "score_run"]

logger = logging.getLogger(__name__)


def _last_checkpoint(fold_dir: Path) -> Path | None:
    """The newest per-epoch checkpoint (``epoch_checkpoint_epoch=7.pt``, Ignite's naming) of a fold."""
    import re

    ckpts = [(int(m.group(1)), p) for p in fold_dir.glob("epoch_checkpoint_*.pt") if (m := re.search(r"(\d+)$", p.stem))]
    return max(ckpts)[1] if ckpts else None


def train_folds(
    config: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    folds: Sequence[int] | None = None,
    roots: dict | None = None,
    overrides: dict | None = None,
    progress: bool = True,
    max_steps: int | None = None,
) -> list[dict]:
    """Train (or resume, or skip when done) one model per fold of the config's pool datalist.

    Returns:
        The training summary of each fold.
    """
    from brainseg3d.data.pool import load_pool
    from brainseg3d.training.trainer import config_name, load_config, train

    parser = load_config(config, overrides)
    name = config_name(parser, config)
    out = Path(output or Path("runs") / name)
    n_folds = len({it["fold"] for it in load_pool(parser["data"]["datalist"], {**(parser["data"].get("roots") or {}), **(roots or {})})})
    summaries = []
    for fold in folds if folds is not None else range(n_folds):
        fold_dir = out / f"fold{fold}"
        done = fold_dir / "summary.json"
        if done.exists() and (fold_dir / "oof").is_dir():
            logger.info("fold %d: done (%s), skipped", fold, done)
            summaries.append(json.loads(done.read_text()))
            continue
        resume = _last_checkpoint(fold_dir)
        logger.info("fold %d: %s", fold, f"resuming from {resume}" if resume else "training")
        summaries.append(train(config, output=fold_dir, fold=fold, roots=roots, overrides=overrides, resume=resume,
                               progress=progress, max_steps=max_steps))
    return summaries


class _FlipMean(torch.nn.Module):
    """Flip test-time augmentation as one network: the logit of
    :func:`~brainseg3d.networks.flip_mean_probability` (what the Predictor does with ``tta=True``)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        from brainseg3d.networks import flip_mean_probability

        return torch.logit(flip_mean_probability(self.net, x), eps=1e-6)


def predict_out_of_fold(run: str | os.PathLike, name: str = "oof_tta", tta: bool = True, roots: dict | None = None,
                        folds: Sequence[int] | None = None, views: str | Sequence[str] | None = None) -> int:
    """Predict each fold's held-out cases again with its final weights (e.g. with flip TTA, or
    slicing other views) into ``fold<i>/<name>/``, so a variant of inference is judged on the
    same out-of-fold cases.

    Args:
        views: the slice views the fold models read (default: the ones they were trained on,
            the config's ``views``); several are averaged.

    Returns:
        The number of cases predicted.
    """
    from brainseg3d.data.pool import fold_items
    from brainseg3d.data.slices import VolumeCache
    from brainseg3d.networks import bf16_supported, volume_network
    from brainseg3d.training.trainer import load_config, write_out_of_fold
    from brainseg3d.preprocessing.transforms import preprocessing

    n = 0
    for fold_dir in sorted(Path(run).glob("fold*")):
        fold = int(fold_dir.name[4:])
        if folds is not None and fold not in folds:
            continue
        if not (fold_dir / "final_model.pt").exists():
            logger.warning("%s: no final_model.pt (fold not finished), skipped", fold_dir)
            continue
        parser = load_config(fold_dir / "config.yaml")
        data = parser.get_parsed_content("data")
        _, held = fold_items(data["datalist"], fold, {**(data.get("roots") or {}), **(roots or {})})
        if all((fold_dir / name / f"{it['case']}.npz").exists() for it in held):
            n += len(held)  # done by an earlier call
            continue
        net = parser.get_parsed_content("network")
        net.load_state_dict(torch.load(fold_dir / "final_model.pt", map_location="cpu", weights_only=True))
        dev = torch.device("cpu")
        bf16 = bool(parser.get("train", {}).get("bf16", False)) and bf16_supported(dev)
        mode = parser.get("mode", "2.5d")
        if mode == "3d" and views and ensure_tuple(views) != ("axial",):
            raise ValueError(f"{fold_dir}: a 3D model has no slice views (got {views!r})")
        vnet = volume_network(net.eval(), mode, k=int(parser.get("k", 1)), bf16=bf16, views=views or parser.get("views", "axial"))
        cache = VolumeCache(held, preprocessing(["image", "label"], normalize=data.get("normalize", "zscore")), progress=False)
        # read as in validation: the config's val_inferer (sliding windows for 3D, one call for 2.5D)
        write_out_of_fold(_FlipMean(vnet) if tta else vnet, held, cache, fold_dir / name, dev, inferer=parser.get_parsed_content("val_inferer"))
        n += len(held)
    return n


def _same_shapes(a: dict, b: dict) -> bool:
    """Whether two state dicts have the same tensors, shape for shape."""
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def average_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Average the final weights of several CV runs fold by fold (a "model soup", as stochastic
    weight averaging does along one trajectory), so one network per fold carries what several
    runs learned at the cost of one at inference.

    Every run must hold the same folds (``fold<i>/final_model.pt``) of the same architecture
    (a 2.5D run with fewer neighbour slices is widened to the most, with zero weights on the
    added slices, :func:`~brainseg3d.core.training.widen_neighbour_channels`: it computes what it
    did), and each fold of each run must have been trained on that fold's training cases only (then
    the averaged fold model has never seen its held-out cases either, and the out-of-fold
    predictions stay honest). The last run that has a ``fold<i>/config.yaml`` gives the
    averaged fold its config and summary (CPU minutes: the sum of the runs' recorded ones).

    Args:
        runs: CV run folders (or folders of ``fold<i>/final_model.pt`` members).
        out: the averaged run's folder (``fold<i>/final_model.pt``, ``config.yaml``, ``summary.json``).
        name: the recipe name recorded (default: the names joined with ``+``).

    Returns:
        The averaged ``final_model.pt`` files.

    Raises:
        ValueError: when the runs' folds or weights do not match.
    """
    import shutil

    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise ValueError("cv average: give at least two runs")
    fold_sets = [sorted(p.parent.name for p in r.glob("fold*/final_model.pt")) for r in runs]
    for r, fs in zip(runs, fold_sets):
        if not fs:
            raise ValueError(f"cv average: no fold*/final_model.pt under {r}")
        if fs != fold_sets[0]:
            raise ValueError(f"cv average: {r} has folds {fs}, {runs[0]} has {fold_sets[0]}")
    loaded = {}  # fold -> (states, the run whose config and summary the averaged fold takes)
    for fold in fold_sets[0]:  # every check before anything is written
        with_cfg = [r for r in runs if (r / fold / "config.yaml").exists()]
        if not with_cfg:
            raise ValueError(f"cv average: none of the runs has {fold}/config.yaml (the recipe of the averaged model)")
        states = [torch.load(r / fold / "final_model.pt", map_location="cpu", weights_only=True) for r in runs]
        w = max(range(len(states)), key=lambda i: sum(v.numel() for v in states[i].values()))
        widest, widest_run = states[w], runs[w]
        narrower = []  # runs with fewer neighbour slices, widened with zero weights on the added ones (same function)
        for i, (r, st) in enumerate(zip(runs, states)):
            try:
                states[i] = widen_neighbour_channels(st, widest)  # as it was where the shapes already agree
            except ValueError:
                states[i] = None
            if states[i] is None or not _same_shapes(states[i], widest):
                raise ValueError(f"cv average: {r / fold / 'final_model.pt'} is not the architecture of {widest_run / fold / 'final_model.pt'}")
            if not _same_shapes(st, widest):
                narrower.append(r)
        if with_cfg[-1] in narrower:
            raise ValueError(f"cv average: the recipe (config.yaml) would come from {with_cfg[-1] / fold}, whose network has fewer "
                             f"neighbour slices than {widest_run / fold}: give the widest run last")
        loaded[fold] = states, with_cfg[-1]
    written = []
    for fold, (states, recipe_run) in loaded.items():
        avg = {k: (torch.stack([st[k].float() for st in states]).mean(0).to(v.dtype) if v.is_floating_point() else v.clone())
               for k, v in states[-1].items()}
        target = Path(out) / fold
        target.mkdir(parents=True, exist_ok=True)
        with atomic_path(target / "final_model.pt") as tmp:
            torch.save(avg, tmp)
        written.append(target / "final_model.pt")
        shutil.copyfile(recipe_run / fold / "config.yaml", target / "config.yaml")
        summaries = [json.loads((r / fold / "summary.json").read_text()) if (r / fold / "summary.json").exists() else {} for r in runs]
        summary = dict(summaries[runs.index(recipe_run)])
        summary.update({
            "name": name or "+".join(s.get("name", r.name) for s, r in zip(summaries, runs)),
            "averaged_from": [str(r / fold / "final_model.pt") for r in runs],
            "final_model": str(target / "final_model.pt"),
            "train_cpu_minutes": round(sum(s.get("train_cpu_minutes", 0) for s in summaries), 2),
            "train_minutes": round(sum(s.get("train_minutes", 0) for s in summaries), 2),
        })
        for key in ("best_model", "best_epoch", "best_val_dice"):
            summary.pop(key, None)
        write_json(summary, target / "summary.json")
    return written


def view_out_of_fold(run: str | os.PathLike, views: Sequence[str], roots: dict | None = None) -> str:
    """Out-of-fold predictions of a multi-view ensemble of each fold's own weights: each view
    predicted once into ``fold<i>/oof_<view>/`` (kept, so other combinations reuse it), their
    probabilities averaged into ``fold<i>/oof_<view>+<view>.../``, what
    :class:`~brainseg3d.core.components.SliceWise25D` with these ``views`` computes (up to the
    0-255 storage of each view).

    Returns:
        The name of the averaged predictions (for :func:`score_run`'s ``oof_name``).
    """
    views = list(views)
    for view in views:
        predict_out_of_fold(run, f"oof_{view}", tta=False, roots=roots, views=view)
    if len(views) == 1:
        return f"oof_{views[0]}"
    name = "oof_" + "+".join(views)
    for fold_dir in sorted(Path(run).glob("fold*")):
        first = fold_dir / f"oof_{views[0]}"
        for path in sorted(first.glob("*.npz")):
            target = fold_dir / name / path.name
            if target.exists():
                continue
            probs = []
            for view in views:
                with np.load(fold_dir / f"oof_{view}" / path.name) as z:
                    probs.append(z["prob"].astype(np.float32))
                    meta = {"label": z["label"], "case": z["case"], "source": z["source"]}
            target.parent.mkdir(parents=True, exist_ok=True)
            q = np.clip(np.rint(np.mean(probs, 0)), 0, 255).astype(np.uint8)
            tmp = target.parent / f".{path.stem}.{os.getpid()}.npz"
            np.savez_compressed(tmp, prob=q, **meta)
            os.replace(tmp, target)
    return name


def load_oof(run: str | os.PathLike, name: str = "oof", cases: Iterable[str] | None = None) -> list[dict]:
    """Every out-of-fold prediction of a CV run (only those of ``cases`` when given):
    ``{"case", "source", "fold", "prob", "label"}`` (``prob`` float32 ``[3, X, Y, Z]`` in [0, 1],
    ``label`` bool regions)."""
    wanted = None if cases is None else set(cases)
    out = []
    for path in sorted(Path(run).glob(f"fold*/{name}/*.npz")):
        if wanted is not None and path.stem not in wanted:
            continue
        with np.load(path) as z:
            out.append({
                "case": str(z["case"]),
                "source": str(z["source"]),
                "fold": int(path.parent.parent.name[4:]),
                "prob": z["prob"].astype(np.float32) / 255.0,
                "label": z["label"].astype(bool),
            })
    return out


def score_oof(oof: Iterable[dict], post: dict | None = None, threshold: float = 0.5) -> list[dict]:
    """Per-case Dice / HD95 of out-of-fold probabilities after post-processing ``post``."""
    rows = []
    to_labels = RegionsToLabels(4)
    for item in oof:
        regions = postprocess_regions(item["prob"], **({"thresholds": (threshold,) * 3} | (post or {})))
        pred = to_labels(torch.as_tensor(regions))[0].numpy()
        gt = to_labels(torch.as_tensor(item["label"]))[0].numpy()
        rows.append({"case": item["case"], "source": item["source"], "fold": item["fold"],
                     **region_scores(pred, gt, case_id=item["case"])})
    return rows


def summarize(rows: Sequence[dict]) -> dict:
    """Mean and standard deviation of every metric, overall and per source."""
    keys = [f"{m}_{r}" for m in ("Dice", "HD95") for r in REGIONS]
    groups = {"all": list(rows)} | {s: [r for r in rows if r["source"] == s] for s in SOURCES}
    out = {}
    for g, rs in groups.items():
        if not rs:
            continue
        out[g] = {"n": len(rs)} | {
            k: {"mean": float(np.mean([r[k] for r in rs])), "std": float(np.std([r[k] for r in rs]))} for k in keys
        }
    return out


#: the post-processing grid searched on the out-of-fold predictions
POSTPROCESSING_GRID = {
    "min_component": [0, 50, 200, 500, 1000],
    "min_fraction": [0.0, 0.05, 0.1, 0.2, 0.3, 0.5],
    "et_to_necrosis": [0, 50, 100, 200, 500],
    "fill_core_holes": [False, True],
}


#: per-region probability thresholds searched (WT, TC, ET), before the rules
THRESHOLD_GRID = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def choose_thresholds(oof: Sequence[dict], grid: Sequence[float] | None = None) -> tuple[list[float], list[dict]]:
    """Per-region probability thresholds that maximise the mean out-of-fold Dice of each
    region, chosen in the order the label map nests them: ET first (it depends only on the ET
    channel), then TC (TC | ET) with ET fixed, then WT (WT | TC | ET). Ties go to 0.5, then to
    the lower threshold.

    Returns:
        ``([t_WT, t_TC, t_ET], one row per region and threshold tried)``.
    """
    grid = list(grid or THRESHOLD_GRID)
    chosen = [0.5, 0.5, 0.5]
    tried = []
    refs = [nest_regions(item["label"]) for item in oof]
    for region in (2, 1, 0):
        scores = []
        for t in grid:
            th = list(chosen)
            th[region] = t
            d = []
            for item, gt in zip(oof, refs):
                r = np.stack([item["prob"][i] > th[i] for i in range(3)])
                d.append(binary_dice(nest_regions(r)[region], gt[region]))
            scores.append(float(np.mean(d)))
            tried.append({"region": REGIONS[region], "threshold": t, "Dice": scores[-1]})
        best = max(range(len(grid)), key=lambda i: (round(scores[i], 9), grid[i] == 0.5, -grid[i]))
        chosen[region] = grid[best]
    return chosen, tried


def choose_postprocessing(oof: Sequence[dict], grid: dict | None = None, thresholds: Sequence[float] | None = None) -> tuple[dict, list[dict]]:
    """Pick the post-processing with the best mean out-of-fold Dice (mean of WT, TC, ET over
    all cases); ties go to the simpler component rules (earlier in the grid), to no core hole
    filling, and to the *larger* ET rule (``et_to_necrosis``). The ET rule only changes cases whose whole predicted ET is
    smaller than its threshold; a case without enhancing tumour in its reference, where the
    BraTS convention scores any predicted ET as 0 and none as 1, is what it protects. A pool in
    which every case has an enhancing tumour (as in the 60-case pool) cannot show
    that gain, only the cost: so among settings that cost nothing on the pool, the largest.

    Thresholds first (:func:`choose_thresholds`, unless given), then the rules on the
    thresholded regions (:class:`~brainseg3d.core.components.PostprocessRegions`): the
    absolute and relative component sizes, the core hole filling and the ET rule together.
    Dice only (HD95 is computed for the chosen setting by :func:`score_oof`); the components are
    labelled and the core's holes filled once per case (the filling adds no whole-tumour voxel,
    so it commutes with the component rules), the ET rule is then a count.

    Returns:
        ``(best setting, the settings tried with their mean Dice per region)``.
    """
    from scipy import ndimage

    tried: list[dict] = []
    if thresholds is None:
        thresholds, t_tried = choose_thresholds(oof)
        tried += t_tried
    thresholds = [float(t) for t in thresholds]
    grid = grid or POSTPROCESSING_GRID  # a rule the given grid leaves out stays off
    mcs, fracs, ets = list(grid["min_component"]), list(grid.get("min_fraction", [0.0])), list(grid["et_to_necrosis"])
    fills = [bool(h) for h in grid.get("fill_core_holes", [False])]
    dice = np.zeros((len(mcs), len(fracs), len(fills), len(ets), len(oof), 3))
    for c, item in enumerate(oof):
        gt = nest_regions(item["label"])
        raw = nest_regions(np.stack([item["prob"][i] > thresholds[i] for i in range(3)]))
        filled = raw[1] | (fill_plane_holes(raw[1]) & raw[0]) if any(fills) else None
        lab, n = ndimage.label(raw[0], structure=np.ones((3,) * raw[0].ndim, bool))
        sizes = np.bincount(lab.ravel())
        for a, mc in enumerate(mcs):
            for f, frac in enumerate(fracs):
                keep = ~small_components(sizes, mc, frac)  # the rule PostprocessRegions applies
                keep[0] = False
                kept = keep[lab]
                r = raw & kept[None]
                wt, et = binary_dice(r[0], gt[0]), binary_dice(r[2], gt[2])
                n_et, et_empty = int(r[2].sum()), not gt[2].any()
                for h, fill in enumerate(fills):
                    tc = binary_dice(filled & kept if fill else r[1], gt[1])
                    for b, thr in enumerate(ets):
                        cleared = 0 < n_et < thr
                        dice[a, f, h, b, c] = (wt, tc, (1.0 if et_empty else 0.0) if cleared else et)
    best, best_key = None, None
    for a, mc in enumerate(mcs):
        for f, frac in enumerate(fracs):
            for h, fill in enumerate(fills):
                for b, thr in enumerate(ets):
                    means = dice[a, f, h, b].mean(0)
                    score = float(means.mean())
                    setting = {"thresholds": thresholds, "min_component": mc, "min_fraction": float(frac), "et_to_necrosis": thr,
                               "fill_core_holes": fill}
                    tried.append({**setting, **{f"Dice_{r}": float(m) for r, m in zip(REGIONS, means)}, "mean": score})
                    key = (round(score, 9), -a, -f, -h, thr)  # ties: simpler component rules, no filling, the larger ET rule
                    if best_key is None or key > best_key:
                        best, best_key = setting, key
    return best, tried


def nested_postprocessing(oof: Sequence[dict], grid: dict | None = None) -> tuple[list[dict], list[dict]]:
    """The honest estimate of the post-processing search: each fold's cases are scored with the
    setting (thresholds and rules) chosen on the *other* folds' out-of-fold predictions only.

    Returns:
        ``(per-case rows as :func:`score_oof` gives them, the setting chosen for each fold)``.
    """
    rows, chosen = [], []
    for fold in sorted({item["fold"] for item in oof}):
        inner = [item for item in oof if item["fold"] != fold]
        outer = [item for item in oof if item["fold"] == fold]
        if not inner:  # one fold only: nothing to choose on
            return [], []
        post, _ = choose_postprocessing(inner, grid)
        chosen.append({"fold": fold, **post})
        rows += score_oof(outer, post)
    return rows, chosen


def _write_rows(rows: Sequence[dict], path: Path) -> None:
    keys = ["case", "source", "fold"] + [f"{m}_{r}" for m in ("Dice", "HD95") for r in REGIONS]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else v) for k, v in r.items()})


def score_run(run: str | os.PathLike, out: str | os.PathLike | None = None, post: dict | None = None,
              choose: bool = True, oof_name: str = "oof") -> dict:
    """Score a CV run's out-of-fold predictions; write ``cv_raw.csv`` (no post-processing),
    ``cv.csv`` / ``cv.json`` (the chosen or given post-processing) and ``postprocessing.json``.

    Args:
        run: the CV run folder (``fold<i>/oof/`` inside).
        out: where to write (default: ``run``).
        post: a fixed post-processing; with ``None`` and ``choose`` it is chosen on the OOF.
        choose: search :data:`POSTPROCESSING_GRID` when ``post`` is not given.
        oof_name: which out-of-fold predictions (``oof``; ``oof_tta`` from
            :func:`predict_out_of_fold`).
    """
    t0 = time.time()
    run = Path(run)
    out = Path(out or run)
    out.mkdir(parents=True, exist_ok=True)
    oof = load_oof(run, oof_name)
    if not oof:
        raise FileNotFoundError(f"no out-of-fold predictions under {run}/fold*/oof/ (run `brainseg3d cv train` first)")
    tried = None
    nested, nested_chosen = [], []
    if post is None and choose:
        post, tried = choose_postprocessing(oof)
        nested, nested_chosen = nested_postprocessing(oof)
    raw = score_oof(oof)
    rows = score_oof(oof, post) if post else raw
    _write_rows(raw, out / "cv_raw.csv")
    _write_rows(rows, out / "cv.csv")
    summary = {
        "run": str(run),
        "n_cases": len(rows),
        "oof": oof_name,
        "folds": sorted({r["fold"] for r in rows}),
        "postprocessing": post or {},
        "raw": summarize(raw),
        "postprocessed": summarize(rows),
        "postprocessing_search": tried,
        **({"nested": summarize(nested), "nested_postprocessing": nested_chosen} if nested else {}),
        "cases": rows,
        "seconds": round(time.time() - t0, 1),
        "note": "out-of-fold: each case predicted by the fold model that never saw it; final weights of each fold; "
                "post-processing chosen on these same out-of-fold cases (slightly optimistic); 'nested': each fold "
                "scored with the setting chosen on the other folds only (the honest figure)",
    }
    write_json(summary, out / "cv.json")
    if post:
        write_json(post, out / "postprocessing.json")
    return summary


def format_summary(summary: dict) -> str:
    """A short text table: mean +/- std Dice per source, raw and post-processed."""
    lines = []
    for kind in ("raw", "postprocessed", "nested"):
        for g, s in summary.get(kind, {}).items():
            cells = "  ".join(f"{r} {s[f'Dice_{r}']['mean']:.3f}+/-{s[f'Dice_{r}']['std']:.3f}" for r in REGIONS)
            lines.append(f"{kind:13s} {g:7s} n={s['n']:3d}  {cells}")
    lines.append(f"post-processing: {json.dumps(summary['postprocessing'])}")
    return "\n".join(lines)


def _network_text(cfg: dict, soup: int = 0) -> str:
    """The network column of the experiments table: a 2.5D network's class, widths and neighbour
    slices (and the views it was trained on); a 3D one's class, width and patch.

    Args:
        cfg: the run's config (for a soup, that of its last ingredient, as ``cv average`` keeps it).
        soup: how many runs' weights were averaged (``cv average``); 0 for a trained run. A soup's
            config is its last ingredient's only, so the text says so rather than name that
            ingredient's views as the soup's.
    """
    net = cfg.get("network", {})
    name = str(net.get("_target_", "?")).rsplit(".", 1)[-1]
    if cfg.get("mode", "2.5d") == "3d":
        width = net.get("channels") or f"init_filters {net.get('init_filters', '?')}"
        return f"{name} 3D {width}, patch {'x'.join(map(str, cfg.get('data', {}).get('patch', [])))}"
    views = list(ensure_tuple(cfg.get("views", "axial")))  # a name or a list of names
    trained_on = f"trained on {'+'.join(views)}" if views != ["axial"] else ""
    if soup:
        trained_on = f"soup of {soup} runs" + (f" (the last {trained_on})" if trained_on else "")
    return f"{name} {net.get('channels', '')}, K={cfg.get('k', '?')}" + (f", {trained_on}" if trained_on else "")


def _run_facts(run: Path) -> dict:
    """Recipe facts of a CV run from its fold summaries and config."""
    import yaml

    summaries = [json.loads(p.read_text()) for p in sorted(run.glob("fold*/summary.json"))]
    cfg_path = next(iter(sorted(run.glob("fold*/config.yaml"))), None)
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path else {}
    aug = [t.get("_target_", "?") for t in cfg.get("augmentation", [])] if isinstance(cfg.get("augmentation"), list) else []
    names = list(dict.fromkeys(s.get("name", cfg.get("name", run.name)) for s in summaries)) or [cfg.get("name", run.name)]
    epochs = [s["epochs"] for s in summaries]
    return {
        # a run whose folds come from different recipes (e.g. one fold retrained longer) says so
        "name": names[0] if len(names) == 1 else f"{run.name} (folds: {' / '.join(s.get('name', '?') for s in summaries)})",
        "network": _network_text(cfg, soup=max((len(s.get("averaged_from") or []) for s in summaries), default=0)),
        "params": summaries[0]["params"] if summaries else None,
        "epochs": (epochs[0] if len(set(epochs)) == 1 else "/".join(map(str, epochs))) if epochs else None,
        "iterations": sum(s["iterations"] for s in summaries),
        "cpu_minutes": round(sum(s["train_cpu_minutes"] for s in summaries), 1),
        # a fold resumed from a checkpoint older than the run clock did not count its first epochs' CPU time
        "cpu_partial": any(s.get("cpu_minutes_unrecorded_epochs") for s in summaries),
        "wall_minutes": round(sum(s["train_minutes"] for s in summaries), 1),
        "augmentation": ", ".join(a.rsplit(".", 1)[-1] for a in aug if not a.startswith(("SpatialPad", "RandSpatialCrop", "RandCropByPosNegLabel"))) or "default",
        "folds": len(summaries),
        "hardware": summaries[0].get("hardware") if summaries else None,
    }


def _compare_lines(rows, name: str, evaluation: dict) -> list[str]:
    """Another model's ``brainseg3d evaluate`` scores against each run's out-of-fold scores
    on exactly the same cases, per source."""
    from brainseg3d.data.pool import case_source

    theirs = {r["case"]: r for r in evaluation["cases"]}
    lines = ["", f"## Same cases, other model: {name}", "",
             f"`{name}` scored by `brainseg3d evaluate` on {len(theirs)} pool cases it never trained on, against the",
             "out-of-fold predictions of each recipe on exactly those cases (mean +/- std; the recipes' figures",
             "include the post-processing chosen by CV).", "",
             "| model | source | n | Dice WT | Dice TC | Dice ET |", "|---|---|---|---|---|---|"]

    def cell(rs, r):
        v = [x[f"Dice_{r}"] for x in rs]
        return f"{np.mean(v):.3f} +/- {np.std(v):.3f}"

    for src in ("all", *SOURCES):
        pick = [c for c in theirs if src == "all" or case_source(c) == src]
        if not pick:
            continue
        lines.append(f"| {name}, all its cases | {src} | {len(pick)} | " + " | ".join(cell([theirs[c] for c in pick], r) for r in REGIONS) + " |")
        for facts, cv in rows:
            ours = {x["case"]: x for x in cv["cases"] if x["case"] in set(pick)}
            if not ours:
                continue
            both = sorted(ours)
            lines.append(f"| {name}, the cases below | {src} | {len(both)} | " + " | ".join(cell([theirs[c] for c in both], r) for r in REGIONS) + " |")
            lines.append(f"| **{facts['name']}** (out-of-fold) | {src} | {len(both)} | " + " | ".join(cell([ours[c] for c in both], r) for r in REGIONS) + " |")
    return lines


def _pp_text(pp: dict) -> str:
    t = pp.get("thresholds", [0.5, 0.5, 0.5])
    return (f"t {'/'.join(f'{x:g}' for x in t)}; mc {pp.get('min_component', 0)}"
            + (f"; mf {pp['min_fraction']:g}" if pp.get("min_fraction") else "") + f"; et {pp.get('et_to_necrosis', 0)}"
            + ("; fh" if pp.get("fill_core_holes") else ""))


def experiments_table(runs: Sequence[str | os.PathLike], out: str | os.PathLike, seconds: dict | None = None,
                      compare: dict | None = None, command: str | None = None, notes: str | os.PathLike | None = None) -> Path:
    """Write the experiments table (Markdown, ``out``) and a chart beside it (``.png``) from
    CV runs that ``cv score`` has scored: recipe, params, CPU minutes, out-of-fold Dice per
    region and source (mean +/- std), post-processing, inference s/case.

    Args:
        runs: CV run folders (each with ``cv.json``).
        out: the Markdown file.
        seconds: run name -> measured end-to-end inference s/case (``brainseg3d bench``).
        compare: model name -> ``brainseg3d evaluate`` JSON of another model on pool cases it
            never saw; a second table puts it beside each run's out-of-fold scores on those cases.
        command: the command line to print as the table's origin.
        notes: a Markdown file appended verbatim (reading of the results, what is next).
    """
    out = Path(out)
    rows = []
    for run in map(Path, runs):
        cvj = run / "cv.json"
        if not cvj.exists():
            raise FileNotFoundError(f"{run}: no cv.json (run `brainseg3d cv score {run}` first)")
        facts, scored = _run_facts(run), json.loads(cvj.read_text())
        if scored.get("oof", "oof") != "oof":  # the same weights read otherwise (other views, flip TTA)
            facts["name"] += f" [{scored['oof'].removeprefix('oof_')}]"
        rows.append((facts, scored))
    seconds = seconds or {}
    lines = [
        "# Experiments",
        "",
        "Every recipe tried, cross-validated on the 60-case pool (`data_lists/pool60.json`: 35 adult",
        "glioma, 25 BraTS-Africa; 5 patient-level folds stratified by source). Each case is scored",
        "once, by the fold model that never saw it (final weights of each fold, no epoch chosen on",
        "held-out cases); per-volume Dice, mean +/- standard deviation over cases. *pp*: the",
        "post-processing chosen on these out-of-fold cases (*t*: WT/TC/ET probability thresholds;",
        "*mc*: smallest tumour component kept, voxels; *mf*: and as a fraction of the largest;",
        "*et*: an ET smaller than this becomes necrosis; *fh*: the core's holes filled); *raw*: threshold 0.5, no rules. Choosing",
        "the post-processing on the same cases makes the *pp* rows slightly optimistic; *nested*:",
        "each fold scored with the post-processing chosen on the other folds only (the honest figure).",
        "*CPU min*: training CPU minutes of the folds the run has (a run of fewer than 5 folds says so in",
        "*n*); *>=*: a fold's first epochs were not CPU-timed (resumed from a checkpoint older than the run clock).",
        "",
        f"Made by `{command or f'brainseg3d cv table {chr(32).join(str(r) for r in runs)} --out {out}'}`.",
        "",
        "| recipe | network | params | epochs/fold | CPU min (all folds) | augmentation | source | n | Dice WT | Dice TC | Dice ET | HD95 WT | pp | inference s/case |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for facts, cv in rows:
        pp = cv.get("postprocessing") or {}
        for kind in ("postprocessed", "nested", "raw"):
            for src in ("all", *SOURCES):
                s = cv.get(kind, {}).get(src)
                if not s:
                    continue
                d = "  ".join(f"{s[f'Dice_{r}']['mean']:.3f} +/- {s[f'Dice_{r}']['std']:.3f}" for r in REGIONS).split("  ")
                first = kind == "postprocessed" and src == "all"
                lines.append("| " + " | ".join([
                    facts["name"] if first else "",
                    facts["network"] if first else "",
                    f"{facts['params'] / 1e6:.2f} M" if first and facts["params"] else "",
                    str(facts["epochs"]) if first else "",
                    (f">= {facts['cpu_minutes']}" if facts["cpu_partial"] else str(facts["cpu_minutes"])) if first else "",
                    facts["augmentation"] if first else "",
                    src, str(s["n"]), *d, f"{s['HD95_WT']['mean']:.1f}",
                    {"postprocessed": _pp_text(pp), "nested": "nested (chosen per fold on the others)"}.get(kind, "raw"),
                    str(seconds.get(facts["name"], "")) if first else "",
                ]) + " |")
    for cname, path in (compare or {}).items():
        lines += _compare_lines(rows, cname, json.loads(Path(path).read_text()))
    lines += ["", f"![out-of-fold Dice per source]({out.with_suffix('.png').name})", ""]
    if notes:
        lines += [Path(notes).read_text().rstrip(), ""]
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    _plot_experiments(rows, out.with_suffix(".png"))
    return out


def _plot_experiments(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 + 3 * len(SOURCES), 4))
    axes = fig.subplots(1, len(SOURCES) + 1, sharey=True)
    width = 0.8 / max(1, len(rows))
    for ax, src in zip(axes, ("all", *SOURCES)):
        for i, (facts, cv) in enumerate(rows):
            s = cv["postprocessed"].get(src)
            if not s:
                continue
            means = [s[f"Dice_{r}"]["mean"] for r in REGIONS]
            stds = [s[f"Dice_{r}"]["std"] for r in REGIONS]
            ax.bar(np.arange(3) + i * width, means, width, yerr=stds, capsize=3, label=facts["name"])
        ax.set_xticks(np.arange(3) + width * (len(rows) - 1) / 2, REGIONS)
        ax.set_title(f"{src} (out-of-fold)")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("per-volume Dice (mean +/- std)")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)


def quality_run(run: str | os.PathLike, bundle: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                review_share: float = 0.25, poor: float = 0.75) -> dict:
    """Fit and validate the per-case quality estimate (:mod:`brainseg3d.inference.quality`) on a scored
    CV run's out-of-fold predictions.

    Every case's features come from the fold model that never saw it, its true Dice from
    ``cv.csv`` (the chosen post-processing), the thresholds from ``postprocessing.json``.
    ``run`` may also be the ``--out`` folder of ``cv score RUN --views ...`` (or ``--tta``):
    its ``cv.json`` names the run and the predictions it scored.
    The validation is leave-one-out over these cases, for each candidate feature set (the
    shipped one is :data:`~brainseg3d.inference.quality.DEFAULT_FEATURES`).

    Writes ``<out>/quality.json`` (validation, per case) and ``quality.png`` (predicted vs true
    WT Dice); with ``bundle``, the calibration into ``<bundle>/configs/quality.json``.

    Returns:
        ``{"calibration", "validation", "candidates"}``.
    """
    from brainseg3d.inference import quality as Q

    run = Path(run)
    out = Path(out or run)
    out.mkdir(parents=True, exist_ok=True)
    post_path, cv_csv = run / "postprocessing.json", run / "cv.csv"
    if not post_path.exists() or not cv_csv.exists():
        raise FileNotFoundError(f"{run}: not scored (no postprocessing.json / cv.csv); run `brainseg3d cv score {run}` first")
    post = json.loads(post_path.read_text())
    with open(cv_csv, newline="") as f:
        true = {r["case"]: {k: float(r[f"Dice_{k}"]) for k in REGIONS} for r in csv.DictReader(f)}
    thresholds = post.get("thresholds", [0.5, 0.5, 0.5])
    scored = json.loads((run / "cv.json").read_text()) if (run / "cv.json").exists() else {}
    source, oof_name = Path(scored.get("run", run)), scored.get("oof", "oof")
    feats, dice, cases = [], [], []
    oof = load_oof(source if source.is_dir() else run, oof_name)
    if not oof:
        raise FileNotFoundError(f"{run}: no out-of-fold predictions under {source}/fold*/{oof_name}/ (the run `cv score` scored; "
                                f"run `brainseg3d cv train` / `cv score` there first)")
    for item in oof:
        feats.append(Q.region_features(item["prob"], thresholds, post=post))
        dice.append(true[item["case"]])
        mask = RegionsToLabels(4)(torch.as_tensor(postprocess_regions(item["prob"], **post)))[0].numpy()
        volumes = label_volumes_ml(mask, 0.001)  # as the case report has them (1 mm voxels)
        cases.append({"case": item["case"], "source": item["source"], "fold": item["fold"], "volumes": volumes,
                      "core_caution": Q.core_caution(volumes) is not None})
    candidates = []
    for use in [(f,) for f in Q.FEATURES] + [tuple(Q.FEATURES)]:
        v = Q.validate(feats, dice, review_share, poor, use=use)
        candidates.append({k: v[k] for k in ("features", "spearman", "flagged_share", "poor_flagged_share")})
    validation = Q.validate(feats, dice, review_share, poor)
    for c, r in zip(cases, validation["leave_one_out"]):
        r.update(c)
    validation["core_caution"] = _core_caution_check(validation["leave_one_out"], Q.CORE_CAUTION)
    calibration = Q.fit_calibration(feats, dice, review_share)
    calibration["fitted_on"] = {"run": run.name, "cases": len(cases), "folds": sorted({c["fold"] for c in cases}),
                                "thresholds": thresholds, "command": f"brainseg3d cv quality {run.name}"}
    calibration["postprocessing"] = {k: post.get(k, 0) for k in ("min_component", "min_fraction")}  # the masks' component rules
    calibration["validation"] = {k: validation[k] for k in ("spearman", "flagged_share", "n_poor", "poor_flagged_share")}
    result = {"calibration": calibration, "validation": validation, "candidates": candidates}
    write_json(result, out / "quality.json")
    _quality_plot(validation, out / "quality.png")
    if bundle is not None:
        write_json(calibration, Path(bundle) / "configs" / "quality.json")
    return result


def _core_caution_check(rows: Sequence[dict], rule: dict) -> dict:
    """How the large-core / little-enhancement rule sorts the out-of-fold cases: true Dice of the
    cases it flags and of the others, and the share flagged by either review rule."""
    def means(sel):
        return {r: float(np.mean([x["true_dice"][r] for x in sel])) if sel else None for r in REGIONS}

    flagged = [r for r in rows if r["core_caution"]]
    others = [r for r in rows if not r["core_caution"]]
    return {"rule": dict(rule), "n_flagged": len(flagged), "cases": [r["case"] for r in flagged],
            "true_dice_flagged": means(flagged), "true_dice_others": means(others),
            "flagged_share_with_wt_rule": float(np.mean([r["review"] or r["core_caution"] for r in rows])) if rows else 0.0}


def _quality_plot(validation: dict, path: Path) -> None:
    """Predicted (leave-one-out) vs true Dice per region, flagged cases marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = validation["leave_one_out"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, region in zip(axes, REGIONS):
        for src, marker in (("adult", "o"), ("africa", "s")):
            sel = [r for r in rows if r.get("source") == src]
            colours = ["tab:red" if r["review"] else "tab:blue" for r in sel]
            ax.scatter([r["predicted_dice"][region] for r in sel], [r["true_dice"][region] for r in sel], c=colours,
                       marker=marker, label=src, alpha=0.8)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel=f"predicted {region} Dice (leave-one-out)", ylabel=f"true {region} Dice",
               title=f"{region}: Spearman {validation['spearman'][region]:.2f}")
        if region == "WT":
            ax.axhline(validation["poor_wt_dice"], color="grey", lw=0.6)
    axes[0].legend(title="red: flagged for review", fontsize=8)
    fig.suptitle(f"per-case quality estimate on {validation['n']} out-of-fold cases: "
                 f"{validation['flagged_share']:.0%} flagged, {validation['poor_flagged_share']:.0%} of the "
                 f"{validation['n_poor']} cases with WT Dice < {validation['poor_wt_dice']} flagged")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
