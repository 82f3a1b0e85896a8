"""What each speed technique is worth: the network stage of one case, one change at a time.

``brainseg3d bench CASES_DIR --ablation`` loads and preprocesses one case once, then times the
network stage (every axial slice with its neighbours through the 2D network) under variants
that each change one thing from the default:

* the brain box (the default crop) against the whole 240 x 240 x 155 volume;
* slices per forward pass (1, 8, 32 = default, 64);
* fp32 against bf16 autocast (the default where the CPU has it);
* ``torch.inference_mode`` against ``torch.no_grad`` and against plain autograd;
* torch threads (1 against all);
* the exported TorchScript model (``models/model.ts``) against eager PyTorch;
* ONNX Runtime (CPU provider), when ``onnxruntime`` and ``onnx`` are installed
  (``pip install onnx onnxruntime``; not a dependency: reported as skipped otherwise).

Each variant reports the median of ``repeats`` runs after one warm-up run and its largest
absolute difference in sigmoid output from the fp32 default, so a faster variant is also
shown to give the same answer.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["run_ablation", "format_ablation"]


def _time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (and the output to compare)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _onnx_runner(net2d: torch.nn.Module, example: torch.Tensor, slice_batch: int):
    """ONNX Runtime session for the 2D network, or the reason it cannot run here."""
    try:
        import onnxruntime as ort  # noqa: F401
    except ImportError:
        return None, "onnxruntime not installed (pip install onnx onnxruntime)"
    path = Path(tempfile.mkdtemp(prefix="brainseg3d-onnx-")) / "net2d.onnx"
    try:
        with torch.no_grad():
            torch.onnx.export(net2d, (example[:slice_batch],), str(path), input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    except Exception as e:  # the exporter needs `onnx`; report, do not fail the benchmark
        return None, f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(stack: torch.Tensor) -> torch.Tensor:
        outs = [sess.run(None, {"x": stack[s : s + slice_batch].numpy()})[0] for s in range(0, stack.shape[0], slice_batch)]
        return torch.from_numpy(__import__("numpy").concatenate(outs, 0))

    return run, None


def run_ablation(cases_root: str, bundle=None, repeats: int = 3, threads: int | None = None, members: int | None = None,
                 views=None) -> dict:
    """Time the network stage of the first usable case under ``cases_root`` (see the module doc).

    Args:
        cases_root: folder of cases; the first usable one is timed.
        bundle: bundle folder (default: the shipped one).
        repeats: timed runs per variant (their median is reported).
        threads: torch CPU threads (default: torch's).
        members: the first N ensemble members (default: all; 1 times a single network).
        views: the views the whole-wrapper rows read (default: the bundle's); the slice rows
            always time the axial stack.
    """
    import numpy as np

    from brainseg3d.core.components import neighbour_stack
    from brainseg3d.core.cases import discover, inspect_case
    from brainseg3d.inference.predictor import Predictor

    if threads:
        torch.set_num_threads(int(threads))
    all_threads = torch.get_num_threads()
    case = next((c for c in discover(cases_root) if inspect_case(c).ok), None)
    if case is None:
        raise ValueError(f"{cases_root}: no usable case")
    predictor = Predictor(bundle, device="cpu", precision="fp32", members=members, views=views, quality=False)
    wrapper = predictor.network  # SliceWise25D
    net2d, k, div, sb0 = wrapper.net, wrapper.k, wrapper.divisible, wrapper.slice_batch
    image = predictor.load(case).data["image"].as_tensor().float()
    full = predictor._input(image)[0]  # normalized, cropped [4, H, W, D]

    def uncropped() -> torch.Tensor:
        """The same volume in a 240 x 240 x 155 box (what a network without the crop sees)."""
        c, h, w, d = full.shape
        big = torch.zeros((c, max(240, h), max(240, w), max(155, d)))
        big[:, :h, :w, :d] = full
        return big

    def stack_of(vol: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = vol.shape
        ph, pw = (div - h % div) % div, (div - w % div) % div
        vol = torch.nn.functional.pad(vol, [0, 0, 0, pw, 0, ph])
        return neighbour_stack(vol, k, None).contiguous()

    crop_stack, big_stack = stack_of(full), stack_of(uncropped())

    def eager(stack, slice_batch=None, bf16=False, mode="inference"):
        slice_batch = slice_batch or sb0
        ctx = {"inference": torch.inference_mode, "no_grad": torch.no_grad, "autograd": contextlib.nullcontext}[mode]

        def run():
            with ctx(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return torch.cat([net2d(stack[s : s + slice_batch]).float() for s in range(0, stack.shape[0], slice_batch)], 0)

        return run

    rows = []

    def add(name, fn, ref=None, note=""):
        print(f"ablation: {name} ...", file=sys.stderr, flush=True)
        sec, out = _time(fn, repeats)
        diff = None
        if ref is not None and out.shape == ref.shape:
            diff = float((torch.sigmoid(out.float()) - torch.sigmoid(ref)).abs().max())
        rows.append({"variant": name, "seconds": round(sec, 3), "max_abs_prob_diff": diff, "note": note})
        return out

    ref = add(f"default fp32: brain box, {sb0} slices/pass, inference_mode", eager(crop_stack))
    from brainseg3d.networks import bf16_supported

    has_bf16 = bf16_supported(torch.device("cpu"))
    if has_bf16:
        add("bf16 autocast (the default on this CPU)", eager(crop_stack, bf16=True), ref)
    else:
        rows.append({"variant": "bf16 autocast", "seconds": None, "max_abs_prob_diff": None, "note": "this CPU has no native bf16"})
    add("whole 240x240x155 volume (no brain crop)", eager(big_stack), None, f"{big_stack.shape[0]} slices of {tuple(big_stack.shape[2:])} vs {crop_stack.shape[0]} of {tuple(crop_stack.shape[2:])}")
    for sb in (1, 4, 8, 16, 32, 64):
        if sb != sb0:
            add(f"{sb} slices per forward pass", eager(crop_stack, slice_batch=sb), ref)
        if has_bf16 and sb in (4, 8, 16, 32, 64) and sb != sb0:
            add(f"bf16, {sb} slices per forward pass", eager(crop_stack, slice_batch=sb, bf16=True), ref)
    add("torch.no_grad instead of inference_mode", eager(crop_stack, mode="no_grad"), ref)
    add("autograd on (no no_grad / inference_mode)", lambda: eager(crop_stack, mode="autograd")().detach(), ref)
    if all_threads > 1:
        torch.set_num_threads(1)
        add("1 torch thread", eager(crop_stack), ref, f"default: {all_threads}")
        torch.set_num_threads(all_threads)
    # the bundle's TorchScript export when the network is the bundle's whole one; with --members
    # / --views, the same wrapper class scripted here (what ckpt_export does to it)
    ts_path = predictor.bundle / "models" / "model.ts"
    ts = None
    if members is not None or views is not None:
        ts, ts_name = torch.jit.script(wrapper).eval(), "TorchScript of the same wrapper (torch.jit.script, fp32)"
    elif ts_path.exists():
        ts, ts_name = torch.jit.load(str(ts_path), map_location="cpu").eval(), "TorchScript models/model.ts (whole wrapper, fp32)"
    if ts is not None:
        x = full[None]

        def ts_run():
            with torch.inference_mode():
                return ts(x)

        def eager_run():
            with torch.inference_mode():
                return wrapper(x)

        ref_vol = add("SliceWise25D eager fp32 (whole wrapper, for the TorchScript row)", eager_run)
        add(ts_name, ts_run, ref_vol)
    run, why = _onnx_runner(net2d.eval(), crop_stack, sb0)
    if run is None:
        rows.append({"variant": "ONNX Runtime (CPU provider)", "seconds": None, "max_abs_prob_diff": None, "note": why})
    else:
        add(f"ONNX Runtime (CPU provider, fp32), {sb0} slices/pass", lambda: run(crop_stack), ref)
    import platform

    return {
        "case": case.case_id,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, torch {torch.__version__}, threads {all_threads}",
        "input_cropped": list(full.shape),
        "repeats": repeats,
        "members": predictor.members,
        "views": predictor.views,
        "rows": rows,
        "numpy": np.__version__,
    }


def format_ablation(report: dict) -> str:
    base = report["rows"][0]["seconds"]
    lines = ["| variant (one change from the default) | network s/case | vs default | max |Δ prob| | note |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        s = r["seconds"]
        d = r["max_abs_prob_diff"]
        lines.append(f"| {r['variant']} | {s if s is not None else '-'} | {f'{s / base:.2f}x' if s else '-'} | {f'{d:.1e}' if d is not None else '-'} | {r['note']} |")
    return "\n".join(lines)
