"""End-to-end speed benchmark: ours against the MONAI model-zoo BraTS recipe, same cases, same run.

``brainseg3d bench CASES_DIR --n 5 --out bench.json`` times, per case, the whole pipeline: load
the four NIfTI, preprocess, infer, post-process / invert, write the mask. Each pipeline runs in
its own fresh process (so its peak RSS is its own), does one warm-up case, then reports the
median over ``n`` cases.

Pipelines:

* ``ours[fp32|bf16][+tta][+mN][+VIEW...][+noq][+nofh]``: :class:`brainseg3d.inference.predictor.Predictor` via
  :func:`brainseg3d.inference.batch.segment_cases` (prefetching the next case, writing in background);
  ``+mN``: the first N ensemble members; ``+axial`` (``+coronal``, ``+sagittal``): only these
  slice views instead of the bundle's; ``+noq``: without the per-case quality estimate,
  ``+nofh``: without the tumour-core hole filling (to measure their cost).
* ``reference``: the model-zoo ``brats_mri_segmentation`` inference recipe: SegResNet 3D
  (blocks_down [1, 2, 2, 4], init_filters 16, 4 in / 3 out), channel-wise non-zero z-score,
  sliding window roi 240x240x160, overlap 0.5, sigmoid > 0.5 -> labels, Invertd, SaveImaged.
  Random weights: it is a speed anchor, not an accuracy one.

When the cases have labels, Dice (WT/TC/ET) of each of our pipelines is reported too, so the
speed of bf16 / TTA is weighed against its accuracy. ``--memory-batch 100`` also runs a batch of
100 cases (the given ones, cycled) through the last pipeline and reports its resident memory
at the start and at the end of the batch: it must not grow.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from brainseg3d.core.labels import VIEWS

__all__ = ["run_benchmark", "reference_pipeline"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_pipeline(out_dir: str, device: str = "cpu"):
    """The MONAI model-zoo brats_mri_segmentation inference recipe, as a callable on a case."""
    import numpy as np
    import torch
    from monai.inferers import SlidingWindowInferer
    from monai.networks.nets import SegResNet
    from monai.transforms import (
        Activationsd,
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        Invertd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        SaveImaged,
        Spacingd,
    )

    from brainseg3d.core.components import RegionsToLabelsd

    torch.manual_seed(0)
    net = SegResNet(blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1], init_filters=16, in_channels=4, out_channels=3, dropout_prob=0.2).to(device).eval()
    pre = Compose([
        LoadImaged("image", image_only=True),
        EnsureChannelFirstd("image"),
        EnsureTyped("image", dtype=torch.float32),
        Orientationd("image", axcodes="RAS", labels=None),
        Spacingd("image", pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
        NormalizeIntensityd("image", nonzero=True, channel_wise=True),
    ])
    inferer = SlidingWindowInferer(roi_size=(240, 240, 160), sw_batch_size=1, overlap=0.5)
    post = Compose([
        Activationsd("pred", sigmoid=True),
        AsDiscreted("pred", threshold=0.5),
        RegionsToLabelsd("pred", et_label=4),
        Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True),
        SaveImaged("pred", output_dir=out_dir, output_postfix="seg", output_dtype=np.uint8, separate_folder=False, resample=False, print_log=False),
    ])

    def run(case):
        d = pre({"image": [str(p) for p in case.modality_files()]})
        with torch.inference_mode():
            pred = inferer(d["image"][None].to(device), net)[0]
        d["pred"] = pred
        post(d)

    return run


def _worker(kind: str, case_dirs: list[str], options: dict, queue) -> None:
    """Run one pipeline over the cases in this (fresh) process; put the results on ``queue``."""
    import torch

    from brainseg3d.core.cases import discover

    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))
    cases = [c for d in case_dirs for c in discover(d)]
    out = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    times: list[float] = []
    dice: dict = {}
    samples: list[float] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(_rss_mb())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if kind == "reference":
        run = reference_pipeline(out, options.get("device", "cpu"))
        run(cases[0])  # warm-up
        for c in cases[1:]:
            t0 = time.perf_counter()
            run(c)
            times.append(time.perf_counter() - t0)
    else:
        from brainseg3d.inference.batch import segment_cases
        from brainseg3d.inference.predictor import Predictor

        precision, tta = options["precision"], options.get("tta", False)
        predictor = Predictor(options.get("bundle"), device=options.get("device", "auto"), precision=precision, tta=tta,
                              members=options.get("members"), quality=options.get("quality", True), views=options.get("views"),
                              fill_core_holes=options.get("fill_core_holes"))
        workers = options.get("workers")
        segment_cases(cases[:1], out + "/warmup", predictor, progress=False)
        # per-case end-to-end: one case at a time through the batch runner (load + infer + write)
        for c in cases[1:]:
            t0 = time.perf_counter()
            segment_cases([c], out, predictor, progress=False, overwrite=True, workers=workers)
            times.append(time.perf_counter() - t0)
        # where the time goes: each case report's own stage times (read + preprocess; network + post-processing)
        import json

        reports = [json.loads(Path(out, f"{c.case_id}.json").read_text()) for c in cases[1:]]
        dice["postprocessing"] = reports[0].get("postprocessing")  # the setting the timed pipeline applied
        for key in ("seconds_load", "seconds_inference"):
            values = [r[key] for r in reports if key in r]
            if values:
                dice[f"median_{key}"] = round(statistics.median(values), 3)
        # batch throughput with prefetch / background writes over the same cases
        t0 = time.perf_counter()
        segment_cases(cases[1:], out + "/batch", predictor, progress=False, workers=workers)
        batch_s = (time.perf_counter() - t0) / max(1, len(cases) - 1)
        dice["batch_seconds_per_case"] = batch_s
        dice["workers"] = workers
        n_mem = int(options.get("memory_batch") or 0)
        if n_mem:
            import dataclasses as dc

            many = [dc.replace(cases[1 + i % (len(cases) - 1)], case_id=f"mem{i:04d}") for i in range(n_mem)]
            mark = len(samples)
            t0 = time.perf_counter()
            res = segment_cases(many, out + "/memory", predictor, progress=False, workers=workers)
            elapsed = time.perf_counter() - t0
            trace = samples[mark:]
            if trace:
                tenth = trace[: max(1, len(trace) // 10)]
                dice["memory_batch"] = {
                    "cases": n_mem,
                    "ok": sum(r.status == "ok" for r in res),
                    "seconds": round(elapsed, 2),
                    "cases_per_s": round(n_mem / elapsed, 3),
                    "rss_mb_trace": [round(trace[int(j * (len(trace) - 1) / 19)], 1) for j in range(20)],
                    "rss_mb_first_10pct_max": round(max(tenth), 1),
                    "rss_mb_last_10pct_max": round(max(trace[-max(1, len(trace) // 10):]), 1),
                    "rss_mb_max": round(max(trace), 1),
                }
        labelled = [c for c in cases[1:] if c.label is not None]
        if labelled:
            import nibabel as nib
            import numpy as np

            from brainseg3d.evaluation.metrics import region_scores

            rows = [region_scores(np.asarray(nib.load(f"{out}/{c.case_id}.nii.gz").dataobj), np.asarray(nib.load(str(c.label)).dataobj), case_id=c.case_id) for c in labelled]
            for r in ("WT", "TC", "ET"):
                dice[f"Dice_{r}"] = float(np.mean([row[f"Dice_{r}"] for row in rows]))
    stop.set()
    sampler.join()
    queue.put({
        "pipeline": kind,
        "n": len(times),
        "median_s": statistics.median(times) if times else None,
        "times_s": [round(t, 3) for t in times],
        "peak_rss_mb": round(_peak_mb(), 1),
        "rss_first_mb": round(samples[len(samples) // 10], 1) if samples else None,
        "rss_last_mb": round(samples[-1], 1) if samples else None,
        **dice,
    })


def _run_isolated(kind: str, case_dirs: list[str], options: dict) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(kind, case_dirs, options, q))
    p.start()
    res = q.get()
    p.join()
    return res


def run_benchmark(cases_root: str, n: int = 5, device: str = "cpu", pipelines=("reference", "ours-fp32", "ours-bf16"), bundle=None, threads: int | None = None, memory_batch: int = 0, workers: int | None = None) -> dict:
    """Time the pipelines on ``n`` cases (+1 warm-up) under ``cases_root``; see the module doc."""
    import torch

    from brainseg3d.core.cases import discover, inspect_case
    from brainseg3d.networks import bf16_supported

    cases = [c for c in discover(cases_root) if inspect_case(c).ok][: n + 1]
    if len(cases) < 2:
        raise ValueError(f"{cases_root}: need at least 2 usable cases (1 warm-up + 1 timed)")
    dirs = [str(c.modality_files()[0].parent) for c in cases]
    results = []
    for kind in pipelines:
        opts = {"device": device, "bundle": bundle, "threads": threads, "workers": workers, "memory_batch": memory_batch if kind == pipelines[-1] else 0}
        if kind.startswith("ours"):
            parts = kind.split("-")[1].split("+")
            members = next((int(x[1:]) for x in parts[1:] if x[:1] == "m" and x[1:].isdigit()), None)
            views = [x for x in parts[1:] if x in VIEWS] or None
            opts.update(precision=parts[0], tta="tta" in parts, members=members, quality="noq" not in parts, views=views,
                        fill_core_holes=False if "nofh" in parts else None)
        name = "reference" if kind == "reference" else "ours"
        if opts.get("precision") == "bf16" and not bf16_supported(torch.device(device)):
            # emulated bf16 is several times slower than fp32: not a number anyone would run with
            note = f"not run: {device} has no native bfloat16 (emulated, several times slower than fp32; auto precision runs fp32 here)"
            print(f"bench: {kind}: {note}", file=sys.stderr, flush=True)
            results.append({"pipeline": kind, "median_s": None, "note": note})
            continue
        print(f"bench: {kind} on {len(cases) - 1} cases ...", file=sys.stderr, flush=True)
        res = _run_isolated(name, dirs, opts)
        res["pipeline"] = kind
        results.append(res)
    ref = next((r for r in results if r["pipeline"] == "reference"), None)
    for r in results:
        if ref and r["median_s"]:
            r["speedup_vs_reference"] = round(ref["median_s"] / r["median_s"], 2)
    return {
        "machine": f"{platform.machine()} {platform.processor()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {threads or torch.get_num_threads()}"
        + (f", GPU {torch.cuda.get_device_name()}" if str(device).startswith("cuda") and torch.cuda.is_available() else ""),
        "device": device,
        "cases": [c.case_id for c in cases],
        "warmup_case": cases[0].case_id,
        "results": results,
    }


def format_table(report: dict) -> str:
    """The report as a Markdown table; *load s* / *inference s*: medians of the cases' own report
    fields ``seconds_load`` (read, check, preprocess) and ``seconds_inference`` (network,
    post-processing, quality estimate, back to the input grid)."""
    head = ("| pipeline | median s/case | batch s/case | × faster than reference | peak RSS MB | load s | inference s "
            "| Dice WT | Dice TC | Dice ET |")
    lines = [head, "|" + "---|" * 10]
    for r in report["results"]:
        f = lambda k, fmt="{:.2f}": fmt.format(r[k]) if r.get(k) is not None else "-"
        lines.append(f"| {r['pipeline']} | {f('median_s')} | {f('batch_seconds_per_case')} | {f('speedup_vs_reference', '{:.1f}')} | {f('peak_rss_mb', '{:.0f}')} "
                     f"| {f('median_seconds_load')} | {f('median_seconds_inference')} | {f('Dice_WT', '{:.3f}')} | {f('Dice_TC', '{:.3f}')} | {f('Dice_ET', '{:.3f}')} |")
    notes = [f"{r['pipeline']}: {r['note']}" for r in report["results"] if r.get("note")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
