"""Time the whole pipeline against the model-zoo recipe (``brainseg3d bench``)."""

from __future__ import annotations

import sys

from brainseg3d.cli._common import _views


def run(args) -> int:
    """Run the command; returns its exit status."""
    from brainseg3d.benchmarks.bench import format_table, run_benchmark

    if args.ablation:
        from brainseg3d.benchmarks.ablation import format_ablation, run_ablation

        report = run_ablation(args.cases_dir, bundle=args.bundle, repeats=args.repeats, threads=args.threads, members=args.members,
                              views=args.views)
        print(format_ablation(report))
        print(f"machine: {report['machine']}; case {report['case']}, cropped input {report['input_cropped']}, median of {report['repeats']}; "
              f"{report['members']} member(s), views {'+'.join(report['views'])}")
        if args.out:
            from brainseg3d.io import write_json

            write_json(report, args.out)
        return 0

    pipelines = args.pipelines.split(",")
    report = run_benchmark(args.cases_dir, n=args.n, device=args.device, pipelines=pipelines, bundle=args.bundle, threads=args.threads, memory_batch=args.memory_batch, workers=args.workers)
    print(format_table(report))
    mem = next((r["memory_batch"] for r in report["results"] if r.get("memory_batch")), None)
    if mem:
        print(f"batch of {mem['cases']} cases: {mem['cases_per_s']:.2f} cases/s; RSS {mem['rss_mb_first_10pct_max']:.0f} MB (first 10 %) -> {mem['rss_mb_last_10pct_max']:.0f} MB (last 10 %), max {mem['rss_mb_max']:.0f} MB")
    print(f"machine: {report['machine']}; cases: {', '.join(report['cases'][1:])} (warm-up {report['warmup_case']})")
    if args.out:
        from brainseg3d.io import write_json

        write_json(report, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    """Register the ``bench`` command on the top-level subparsers."""
    s = sub.add_parser("bench", help="time the whole pipeline per case against the MONAI model-zoo BraTS recipe")
    s.add_argument("cases_dir", help="folder of cases (one warm-up + --n timed)")
    s.add_argument("--n", type=int, default=5, help="timed cases (after one warm-up case)")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--pipelines", default="reference,ours-fp32,ours-bf16", help="comma list: reference, ours-fp32, ours-bf16, ours-bf16+tta, ours-bf16+m1 (first ensemble member only), ...")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    s.add_argument("--memory-batch", type=int, default=0, help="also segment a batch of N cases (cycled) and report RSS at its start and end, and cases/s")
    s.add_argument("--workers", type=int, default=None, help="loader threads of our batch runner (default: 1 on CPU, up to 12 on a GPU)")
    s.add_argument("--ablation", action="store_true", help="instead: time the network stage of one case under each speed technique, one change at a time")
    s.add_argument("--repeats", type=int, default=3, help="--ablation: timed runs per variant (median)")
    s.add_argument("--members", type=int, default=None, help="--ablation: the first N ensemble members (default: all)")
    s.add_argument("--views", type=_views, default=None, help="--ablation: views of the whole-wrapper rows, e.g. axial (default: the bundle's)")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    s.add_argument("--out", default=None, help="JSON report")
    s.set_defaults(func=run)

