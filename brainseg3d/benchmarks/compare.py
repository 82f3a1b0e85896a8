"""Compare architectures under one CPU time budget, on one patient split, per volume.

``brainseg3d compare configs/unet25d.yaml configs/segresnet3d.yaml ... --minutes 8`` trains each
config for the same budget of process CPU time (``train#max_cpu_minutes``: fair even when the
machine is busy with other work), then scores its best checkpoint
on the held-out *test* patients of the datalist: Dice and HD95 per region (WT, TC, ET) on
whole volumes, plus inference seconds per case. The table is written as Markdown.

:func:`evaluate_run` alone scores any training run on any split (used for the model card).
Scores are computed on the preprocessed grid (RAS, 1 mm, cropped to the brain); for BraTS
inputs (already 1 mm) this equals scoring on the original grid, since the crop keeps every
tumour voxel.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from brainseg3d.data.datalist import load_datalist
from brainseg3d.evaluation.metrics import region_scores
from brainseg3d.networks import volume_network
from brainseg3d.training.trainer import load_config, train
from brainseg3d.core.labels import REGIONS
from brainseg3d.preprocessing.transforms import RegionsToLabels, preprocessing

__all__ = ["evaluate_run", "compare"]


def _load_network(run_dir: Path, parser):
    net = parser.get_parsed_content("network")
    state = torch.load(run_dir / "best_model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("network", state) if isinstance(state.get("network"), dict) else state)
    return net.eval()


@torch.inference_mode()
def evaluate_run(run_dir: str | os.PathLike, split: str = "testing", datalist: str | None = None, dataset_dir=None, bf16: bool = False) -> dict:
    """Per-volume Dice / HD95 of a run's ``best_model.pt`` on a datalist split.

    Returns:
        ``{"split", "cases": [{case, Dice_WT, ..., HD95_ET, seconds}], "mean": {...}}``
    """
    run_dir = Path(run_dir)
    parser = load_config(run_dir / "config.yaml")
    data_cfg = parser.get_parsed_content("data")
    items = load_datalist(datalist or data_cfg["datalist"], split, dataset_dir or data_cfg.get("dataset_dir"))
    net = _load_network(run_dir, parser)
    mode, k = parser.get("mode", "2.5d"), int(parser.get("k", 0))
    vnet = volume_network(net, mode, k=k, bf16=bf16, divisible=int(parser.get("divisible", 16)), views=parser.get("views", "axial")).eval()
    if mode == "3d":
        from monai.inferers import SlidingWindowInferer

        inferer = SlidingWindowInferer(roi_size=list(data_cfg["patch"]), sw_batch_size=2, overlap=0.25)
    else:
        inferer = lambda x, n: n(x)  # noqa: E731 - the wrapper already runs slice batches
    chain = preprocessing(["image", "label"], normalize=data_cfg.get("normalize", "zscore"))
    to_labels = RegionsToLabels(4)
    rows = []
    for it in items:
        d = chain({"image": it["image"], "label": it["label"]})
        t0 = time.perf_counter()
        logits = inferer(d["image"].as_tensor()[None], vnet)[0]
        seconds = time.perf_counter() - t0
        pred = to_labels(torch.sigmoid(logits) > 0.5)[0].numpy()
        gt = to_labels(d["label"].as_tensor())[0].numpy()
        rows.append({"case": it["case"], **region_scores(pred, gt, case_id=it["case"]), "seconds": round(seconds, 2)})
    keys = [f"{m}_{r}" for m in ("Dice", "HD95") for r in REGIONS] + ["seconds"]
    return {"split": split, "cases": rows, "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys}}


def compare(configs: list[str], minutes: float = 8.0, out_dir: str | os.PathLike = "runs/compare", report: str | os.PathLike | None = None, dataset_dir=None, threads: int | None = 1) -> list[dict]:
    """Train each config for ``minutes`` of CPU time and score it on the test split; write a Markdown table.

    ``threads=1`` (the default) makes CPU time an honest budget even on a busy machine: with
    several threads per process, waiting threads spin and count as CPU time when cores are shared.
    """
    if threads:
        torch.set_num_threads(int(threads))
    out_dir = Path(out_dir)
    rows = []
    for cfg in configs:
        name = Path(cfg).stem
        summary = train(cfg, output=out_dir / name, dataset_dir=dataset_dir, overrides={"train#max_cpu_minutes": float(minutes), "train#max_epochs": 1000}, progress=False)
        test = evaluate_run(out_dir / name, "testing", dataset_dir=dataset_dir)
        rows.append({"config": cfg, "name": name, "summary": summary, "test": test})
        (out_dir / name / "test_scores.json").write_text(json.dumps(test, indent=2))
    if report:
        write_table(rows, report, minutes)
    return rows


def write_table(rows: list[dict], path: str | os.PathLike, minutes: float) -> None:
    lines = [
        f"Each model trained for the same {minutes:g} minutes of process CPU time (one thread) on the same patient split (`data_lists/brats2018.json`); "
        "best validation checkpoint scored per volume on the held-out test patients. Inference s/case: the network on the cropped volume, fp32.",
        "",
        "| model | params | epochs | train CPU min | val Dice (mean) | test Dice WT | TC | ET | test HD95 WT | TC | ET | inference s/case |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, m = r["summary"], r["test"]["mean"]
        val = s["best_val_dice"]["mean"] if s.get("best_val_dice") else float("nan")
        lines.append(
            f"| {r['name']} | {s['params'] / 1e6:.1f} M | {s['epochs']} | {s['train_cpu_minutes']:.1f} | {val:.3f} | "
            f"{m['Dice_WT']:.3f} | {m['Dice_TC']:.3f} | {m['Dice_ET']:.3f} | {m['HD95_WT']:.1f} | {m['HD95_TC']:.1f} | {m['HD95_ET']:.1f} | {m['seconds']:.1f} |"
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")
