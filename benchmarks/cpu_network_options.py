"""Would another way of running the 2D network make the fast option faster on a CPU? A timing of options.

The fast option (``brainseg3d segment --members 1 --views axial``) spends most of its time in one 2D
network pass over every axial slice of the cropped brain (``brainseg3d bench``: load s / inference s).
This times the bundle's first member on a batch of random slices of the padded in-plane size of a BraTS
brain (144 x 176), in fp32, run as shipped and in the ways PyTorch offers on a CPU without changing the
weights:

- ``default``: the eager network, as :class:`~brainseg3d.core.components.SliceWise25D` runs it;
- ``channels_last``: the network and its input in channels-last memory format (oneDNN's preferred layout);
- ``jit_freeze``: ``torch.jit.trace`` + ``torch.jit.freeze`` + ``torch.jit.optimize_for_inference``;
- ``batch_<n>``: the default network with other slice batches (the bundle's ``slice_batch`` is 32).

Each row: the best of ``--repeats`` timings, scaled to seconds per 32 slices, its ratio to ``default``, and the
largest absolute logit difference from ``default`` (an option that changed the masks would need CV again).

    .venv/bin/python benchmarks/cpu_network_options.py --out docs/bench_network_options

Writes OUT.json and OUT.md. About 20 seconds on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainseg3d.core.training import bf16_supported  # noqa: E402
from brainseg3d.inference.predictor import DEFAULT_BUNDLE, load_bundle_network  # noqa: E402
from brainseg3d.io import write_record  # noqa: E402


def first_member(bundle) -> torch.nn.Module:
    """The 2D network of the bundle's first member (what the fast option runs per slice batch)."""
    net, _ = load_bundle_network(bundle, "cpu", members=1, views="axial")
    inner = net.net
    return inner.nets[0] if type(inner).__name__ == "ProbabilityMean" else inner


def best_seconds(fn, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """The fastest of ``repeats`` calls of ``fn(x)`` after one warm-up call, and its output."""
    with torch.inference_mode():
        y = fn(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            y = fn(x)
            times.append(time.perf_counter() - t)
    return min(times), y


def measure(bundle=None, size=(144, 176), slices: int = 32, repeats: int = 3, batches=(8, 16, 64)) -> dict:
    """Time the options on ``slices`` random slices of in-plane ``size``; rows in seconds per 32 slices."""
    net = first_member(bundle or DEFAULT_BUNDLE).eval()
    in_ch = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    x = torch.randn(slices, in_ch, *size, generator=torch.Generator().manual_seed(0))
    per32 = 32.0 / slices
    rows = []
    base, ref = best_seconds(net, x, repeats)
    rows.append({"option": "default", "seconds_per_32": base * per32, "max_abs_diff": 0.0})

    cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    t, y = best_seconds(lambda a: cl(a.contiguous(memory_format=torch.channels_last)), x, repeats)
    rows.append({"option": "channels_last", "seconds_per_32": t * per32, "max_abs_diff": float((y - ref).abs().max())})

    with torch.inference_mode():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(copy.deepcopy(net), x[:2])))
    t, y = best_seconds(frozen, x, repeats)
    rows.append({"option": "jit_freeze", "seconds_per_32": t * per32, "max_abs_diff": float((y - ref).abs().max())})

    for n in batches:
        xb = x[:n] if n <= slices else x.repeat((n + slices - 1) // slices, 1, 1, 1)[:n]
        t, _ = best_seconds(net, xb, repeats)
        rows.append({"option": f"batch_{n}", "seconds_per_32": t * 32.0 / n, "max_abs_diff": 0.0})
    for r in rows:
        r["ratio_to_default"] = r["seconds_per_32"] / rows[0]["seconds_per_32"]
    return {
        "size": list(size), "slices": slices, "repeats": repeats, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "processor": platform.processor() or platform.machine(),
        "bf16_supported": bool(bf16_supported(torch.device("cpu"))), "rows": rows,
    }


def markdown(res: dict) -> str:
    lines = [
        f"2D network of the first member, fp32, {res['slices']} random slices of {res['size'][0]} x {res['size'][1]}, "
        f"{res['threads']} threads, torch {res['torch']}, bfloat16 CPU: {res['bf16_supported']}; best of {res['repeats']}.",
        "",
        "| option | s per 32 slices | x default | largest logit difference |",
        "|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r['option']} | {r['seconds_per_32']:.3f} | {r['ratio_to_default']:.2f} | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    p.add_argument("--size", type=int, nargs=2, default=(144, 176), metavar=("H", "W"), help="in-plane size (default 144 176)")
    p.add_argument("--slices", type=int, default=32, help="slices per timed call (default 32, the bundle's slice_batch)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per option; the best is kept (default 3)")
    p.add_argument("--batches", default="8,16,64", help="other slice batches to time (default 8,16,64)")
    p.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(",") if b)
    res = measure(args.bundle, tuple(args.size), args.slices, args.repeats, batches)
    print(write_record(res, markdown(res), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
