"""``brainseg3d`` command line: thin shells over the package functions.

Paths and tables go to stdout; logs and progress bars go to stderr. Exit status is 0 only when
everything asked for succeeded. What a command writes is named by ``--out`` (a file or a folder,
as its help says), except in ``segment`` and ``merge``, whose output folder is the second
positional argument (``brainseg3d segment IN OUT``); earlier spellings (``--output``,
``--output-dir``) are still accepted.

Subcommands: ``cases``, ``datalist``, ``train``, ``export``, ``segment``, ``evaluate``,
``score``, ``compare``, ``bench``, ``merge``, ``app``, ``demo``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from brainseg3d.core.labels import LABEL_SCHEMES
from brainseg3d.io import OUTPUT_FORMATS

__all__ = ["main"]

logger = logging.getLogger("brainseg3d")


def _n(count: int, noun: str) -> str:
    """``1 case``, ``2 cases``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _cases(args) -> int:
    from brainseg3d.core.cases import CaseError, discover, inspect_case
    from brainseg3d.core.checks import check_headers

    warnings: list[str] = []
    cases = discover(args.root, warnings)
    bad = 0
    print("case\tt1\tt1ce\tt2\tflair\tlabel\tshape\tspacing\tstatus")
    for c in cases:
        info = inspect_case(c)
        if not c.problems and (info.ok or info.problem.startswith("modalities on different grids")):
            try:
                check_headers(c)
            except CaseError as e:
                info.problem = e.problem
        if c.image4d is not None:
            files = [c.image4d.name + " (4D)"] + ["-"] * 3
        else:
            files = [c.images[m].name if m in c.images else "MISSING" for m in ("t1", "t1ce", "t2", "flair")]
        shape = "x".join(map(str, info.shape)) if info.shape else "-"
        spacing = "x".join(f"{s:.2f}" for s in info.spacing) if info.spacing else "-"
        registers = not info.ok and info.problem.startswith("modalities on different grids")
        status = "ok" if info.ok else (f"{info.problem}; `segment` registers them (--register auto)" if registers else info.problem)
        bad += not info.ok and not registers
        print("\t".join([c.case_id, *files, c.label.name if c.label else "none", shape, spacing, status]))
        warnings += [f"{c.case_id}: {w}" for w in info.warnings]
    for w in warnings:
        print(f"WARNING {w}", file=sys.stderr)
    print(f"{_n(len(cases), 'case')}, {len(cases) - bad} ok, {bad} with problems", file=sys.stderr)
    return 0 if cases and not bad else 1


def _datalist(args) -> int:
    from brainseg3d.data.datalist import make_datalist, write_datalist

    split = tuple(float(s) for s in args.split.split("/"))
    docs = make_datalist(args.root, split=split, seed=args.seed, folds=args.folds, dataset_dir=args.dataset_dir)
    out = Path(args.out)
    if isinstance(docs, list):
        for doc in docs:
            path = out.with_name(f"{out.stem}_fold{doc['fold']}{out.suffix}")
            write_datalist(doc, path, relative_to=path.parent)
            print(path)
    else:
        write_datalist(docs, out, relative_to=out.parent)
        print(out)
        print(" / ".join(f"{k} {len(docs[k])}" for k in ("training", "validation", "testing")), file=sys.stderr)
    return 0


def _pool(args) -> int:
    from brainseg3d.data.pool import make_pool, parse_roots, write_pool

    doc = make_pool(parse_roots(args.root), folds=args.folds, seed=args.seed)
    print(write_pool(doc, args.out))
    counts = {}
    for it in doc["training"]:
        counts.setdefault(it["fold"], {}).setdefault(it["source"], 0)
        counts[it["fold"]][it["source"]] += 1
    for fold in sorted(counts):
        print(f"fold {fold}: " + ", ".join(f"{n} {src}" for src, n in sorted(counts[fold].items())), file=sys.stderr)
    return 0


def _overrides(pairs) -> dict:
    out = {}
    for kv in pairs or []:
        key, _, value = kv.partition("=")
        out[key] = json.loads(value) if value[:1] in "[{0123456789-tfn\"" and value not in ("", "-") else value
    return out


def _cv_train(args) -> int:
    from brainseg3d.training.cv import train_folds
    from brainseg3d.data.pool import parse_roots

    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    summaries = train_folds(args.config, output=args.out, folds=folds, roots=parse_roots(args.root),
                            overrides=_overrides(args.set), progress=not args.quiet, max_steps=args.max_steps)
    for s in summaries:
        print(f"fold {s.get('fold')}: {s['epochs']} epochs, {s['train_minutes']} min -> {s['final_model']}")
    return 0


def _bundle_sync(args) -> int:
    from brainseg3d.bundle import sync_bundle

    try:
        drifted = sync_bundle(args.bundle, check=args.check)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    verb = "differs" if args.check else "copied"
    for d in drifted:
        print(f"{d}: {verb}")
    if not drifted:
        print("bundle scripts/ in sync with the package; version checked")
    return 1 if args.check and drifted else 0


def _cv_quality(args) -> int:
    from brainseg3d.training.cv import quality_run

    res = quality_run(args.run, bundle=args.bundle, out=args.out, review_share=args.review_share)
    v = res["validation"]
    print(f"{v['n']} out-of-fold cases (leave-one-out): Spearman WT {v['spearman']['WT']:.2f} TC {v['spearman']['TC']:.2f} "
          f"ET {v['spearman']['ET']:.2f}; {v['flagged_share']:.0%} flagged; {v['poor_flagged_share']:.0%} of the "
          f"{v['n_poor']} cases with WT Dice < {v['poor_wt_dice']} flagged")
    for c in res["candidates"]:
        print(f"  features {'+'.join(c['features']):45s} Spearman WT {c['spearman']['WT']:.2f}  flagged {c['flagged_share']:.0%}  poor flagged {c['poor_flagged_share']:.0%}")
    print(Path(args.out or args.run) / "quality.json")
    return 0


def _cv_score(args) -> int:
    from brainseg3d.training.cv import format_summary, score_run

    post = None
    if args.min_component is not None or args.et_to_necrosis is not None or args.min_fraction is not None:
        post = {"min_component": args.min_component or 0, "min_fraction": args.min_fraction or 0.0, "et_to_necrosis": args.et_to_necrosis or 0}
    if args.tta:
        from brainseg3d.training.cv import predict_out_of_fold
        from brainseg3d.data.pool import parse_roots

        print(f"{predict_out_of_fold(args.run, 'oof_tta', tta=True, roots=parse_roots(args.root))} cases predicted with flip TTA", file=sys.stderr)
    summary = score_run(args.run, args.out, post=post, choose=not args.no_search, oof_name="oof_tta" if args.tta else "oof")
    print(format_summary(summary))
    print(Path(args.out or args.run) / "cv.json")
    return 0


def _cv_table(args) -> int:
    from brainseg3d.training.cv import experiments_table

    seconds = {}
    for kv in args.seconds or []:
        name, _, value = kv.partition("=")
        seconds[name] = float(value)
    compare = dict(kv.partition("=")[::2] for kv in args.compare or [])
    import shlex

    command = "brainseg3d " + shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name in ("brainseg3d", "__main__.py") else None
    print(experiments_table(args.runs, args.out, seconds, compare, command, args.notes))
    return 0


def _cv_export(args) -> int:
    import json as _json

    from brainseg3d.bundle import export_ensemble, network_from_run

    run = Path(args.run)
    folds = sorted(run.glob("fold*/final_model.pt"))
    if args.folds:
        want = {f"fold{int(f)}" for f in args.folds.split(",")}
        folds = [f for f in folds if f.parent.name in want]
    if not folds:
        raise FileNotFoundError(f"no fold*/final_model.pt under {run}")
    post = run / "postprocessing.json"
    post = _json.loads(post.read_text()) if post.exists() else None
    unet, k = network_from_run(run)  # the run's own architecture goes into the bundle
    print(export_ensemble(folds, args.bundle, torchscript=not args.no_torchscript, postprocessing=post, half=not args.fp32,
                          unet=unet, k=k))
    return 0


def _train(args) -> int:
    from brainseg3d.data.pool import parse_roots
    from brainseg3d.training.trainer import train

    overrides = {}
    for kv in args.set or []:
        key, _, value = kv.partition("=")
        overrides[key] = json.loads(value) if value[:1] in "[{0123456789-tfn\"" and value not in ("", "-") else value
    summary = train(
        args.config,
        output=args.out,
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        resume=args.resume,
        dataset_dir=args.dataset_dir,
        device=args.device,
        overrides=overrides,
        max_val_cases=args.max_val_cases,
        progress=not args.quiet,
        fold=args.fold,
        roots=parse_roots(args.root),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _export(args) -> int:
    from brainseg3d.bundle import export_weights

    print(export_weights(args.checkpoint, args.bundle, torchscript=not args.no_torchscript))
    return 0


def discover_inputs(path, workdir, warnings: list | None = None) -> list:
    """NIfTI cases under ``path`` plus DICOM cases (``path`` itself, or its sub-folders),
    converted to NIfTI in ``workdir``. A DICOM case that cannot be converted comes back as a
    case with its problem set, so that the batch reports it by name. Discovery's warnings
    (cases sharing an id, stray files) are appended to ``warnings``."""
    from brainseg3d.core.cases import Case, CaseError, discover
    from brainseg3d.data.dicom import dicom_case_to_nifti, is_dicom_case

    path = Path(path)
    if path.is_dir() and is_dicom_case(path):
        dicom_dirs, cases = [path], []
    else:
        cases = discover(path, warnings)
        dicom_dirs = [d for d in sorted(path.iterdir()) if d.is_dir() and is_dicom_case(d)] if path.is_dir() else []
    for d in dicom_dirs:
        try:
            cases.append(dicom_case_to_nifti(d, Path(workdir) / d.name))
        except CaseError as e:
            cases.append(Case(e.case_id, problems=[e.problem]))
    return sorted(cases, key=lambda c: c.case_id)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> (i, n); without it, under ``torchrun`` the rank and world size."""
    if text:
        i, _, n = text.partition("/")
        i, n = int(i), int(n)
        if not 0 <= i < n:
            raise ValueError(f"--shard {text}: need 0 <= i < n")
        return i, n
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def _merge(args) -> int:
    from brainseg3d.inference.batch import merge_summaries

    summary = merge_summaries(args.output_dir)
    print(Path(args.output_dir) / "summary.json")
    print(f"{summary['ok']} ok, {summary['skipped']} skipped, {summary['failed']} failed over {summary['shards']} shard(s)", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _segment(args) -> int:
    import shutil

    from brainseg3d.inference.batch import segment_cases, write_summary
    from brainseg3d.inference.predictor import Predictor
    from brainseg3d.io import OutputError, check_writable_dir, clean_stale, describe_os_error, make_workdir

    try:  # before any work: the output folder can be created and written
        out_dir = check_writable_dir(args.output_dir)
    except OutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    clean_stale(out_dir)
    warnings: list[str] = []
    # DICOM conversions go to a work folder in the output folder: removed at the end, or by the
    # next run when this one is killed (never left in the system temp folder)
    workdir = make_workdir(out_dir, "dicom")
    try:
        cases = discover_inputs(args.input, workdir, warnings)
        if not cases:
            print(f"no cases found in {args.input}", file=sys.stderr)
            return 1
        shard = parse_shard(args.shard)
        if shard:
            cases = cases[shard[0] :: shard[1]]
        predictor = Predictor(args.bundle, device=args.device, precision=args.precision, labels=args.labels, tta=args.tta, members=args.members,
                              min_component=args.min_component, et_to_necrosis=args.et_to_necrosis, min_fraction=args.min_fraction, register=args.register, skull_strip=args.skull_strip,
                              uncertainty=args.uncertainty)
        try:
            results = segment_cases(cases, out_dir, predictor, overwrite=args.overwrite, preview=args.preview, output_format=args.output_format,
                                    colour_table=args.colour_table, progress=not args.quiet, workers=args.workers)
        except OutputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # every finished mask is listed first, whatever happens to the summary
    for r in results:
        if r.status == "ok":
            print(r.path)
    sys.stdout.flush()
    summary_failed = None
    try:
        write_summary(results, out_dir, shard, warnings)
    except OSError as e:
        summary_failed = describe_os_error(e)
    failed = [r for r in results if r.status == "failed"]
    n_ok = sum(r.status == "ok" for r in results)
    n_skip = sum(r.status == "skipped" for r in results)
    for w in warnings:
        print(f"WARNING {w}", file=sys.stderr)
    skipped = f"{n_skip} skipped (output exists; --overwrite to redo)" if n_skip else "0 skipped"
    print(f"{n_ok} segmented, {skipped}, {len(failed)} failed", file=sys.stderr)
    for r in failed:
        print(f"FAILED {r.case_id}: {r.error}", file=sys.stderr)
    review = [r for r in results if r.review]
    if review:
        print(f"{_n(len(review), 'case')} to review (quality estimate; see <case>.json):", file=sys.stderr)
        for r in review:
            print(f"REVIEW {r.case_id}: {'; '.join(r.reasons or [])}", file=sys.stderr)
    if summary_failed:
        print(f"error: the summary was not written: {summary_failed}", file=sys.stderr)
    return 1 if failed or summary_failed else 0


def _evaluate(args) -> int:
    from brainseg3d.evaluation.metrics import evaluate_folder
    from brainseg3d.io import OutputError, check_writable_dir

    if args.out:
        try:
            check_writable_dir(Path(args.out).parent)
        except OutputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        summary = evaluate_folder(args.pred_dir, args.gt_root, args.out)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and not e.filename:
            raise
        from brainseg3d.io import describe_os_error

        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    keys = list(summary["mean"])
    print("case\t" + "\t".join(keys))
    for r in summary["cases"]:
        print(r["case"] + "\t" + "\t".join(f"{r[k]:.4f}" for k in keys))
    if summary["mean"]:
        print("MEAN\t" + "\t".join(f"{summary['mean'][k]:.4f}" for k in keys))
    for e in summary["errors"]:
        print(f"ERROR {e['case']}: {e['error']}", file=sys.stderr)
    if summary["errors"]:
        print(f"{len(summary['cases'])} case(s) scored, {len(summary['errors'])} could not be scored", file=sys.stderr)
    if args.out:
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}", file=sys.stderr)
    return 1 if summary["errors"] or not summary["cases"] else 0


def _compare(args) -> int:
    from brainseg3d.benchmarks.compare import compare

    rows = compare(args.configs, minutes=args.minutes, out_dir=args.runs_dir, report=args.out, dataset_dir=args.dataset_dir, threads=args.threads)
    if args.out:
        print(Path(args.out).read_text())
    return 0 if rows else 1


def _score(args) -> int:
    from brainseg3d.benchmarks.compare import evaluate_run

    res = evaluate_run(args.run_dir, args.split, bf16=args.bf16)
    print(json.dumps(res, indent=2))
    if args.out:
        from brainseg3d.io import write_json

        write_json(res, args.out)
    return 0


def _bench(args) -> int:
    from brainseg3d.benchmarks.bench import format_table, run_benchmark

    if args.ablation:
        from brainseg3d.benchmarks.ablation import format_ablation, run_ablation

        report = run_ablation(args.cases_dir, bundle=args.bundle, repeats=args.repeats, threads=args.threads)
        print(format_ablation(report))
        print(f"machine: {report['machine']}; case {report['case']}, cropped input {report['input_cropped']}, median of {report['repeats']}")
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


def _app(args) -> int:
    from brainseg3d.app.launch import launch

    return int(launch(port=args.port))


def _demo(args) -> int:
    """Segment the sample case shipped in the repo and score it against its ground truth."""
    from brainseg3d.inference.batch import segment_cases
    from brainseg3d.core.cases import discover
    from brainseg3d.evaluation.metrics import evaluate_folder
    from brainseg3d.inference.predictor import Predictor

    sample = Path(args.sample)
    cases = discover(sample)
    predictor = Predictor(args.bundle)
    results = segment_cases(cases, args.out, predictor, overwrite=True, preview=True, colour_table=True, progress=not args.quiet)
    for r in results:
        print(r.path if r.status == "ok" else f"FAILED {r.case_id}: {r.error}")
    summary = evaluate_folder(args.out, sample)
    for row in summary["cases"]:
        print(f"{row['case']}: Dice WT {row['Dice_WT']:.3f}  TC {row['Dice_TC']:.3f}  ET {row['Dice_ET']:.3f}  "
              f"(HD95 mm WT {row['HD95_WT']:.1f} TC {row['HD95_TC']:.1f} ET {row['HD95_ET']:.1f})")
    print("note: the sample is one of the model's training cases, so this Dice shows the pipeline works, not how "
          "accurate it is on new patients; cross-validated scores: README, Results", file=sys.stderr)
    return 0 if all(r.status == "ok" for r in results) else 1


def _describe(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand its one-line help as the description of its own ``--help``, and
    show defaults there."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                sub = action.choices[choice.dest]
                sub.description = sub.description or choice.help
                sub.formatter_class = argparse.ArgumentDefaultsHelpFormatter
                _describe(sub)


def _out(parser, legacy: str, **kwargs) -> None:
    """The output option, named ``--out`` in every command (a file or a folder, as its help
    says); ``legacy`` is the earlier spelling, still accepted and not shown."""
    parser.add_argument("--out", dest="out", **kwargs)
    parser.add_argument(legacy, dest="out", help=argparse.SUPPRESS, default=kwargs.get("default"))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="brainseg3d", description="Brain tumour (BraTS) segmentation from multimodal MRI. Research use only, not a medical device.")
    p.add_argument("--version", action="version", version=f"brainseg3d {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("cases", help="list the cases under ROOT (any BraTS naming) and check their grids")
    s.add_argument("root", help="a case folder, a folder of case folders, a 4D NIfTI, or a text file listing them")
    s.set_defaults(func=_cases)

    s = sub.add_parser("datalist", help="write a patient-level MONAI datalist (train/validation/test, or k folds)")
    s.add_argument("root", help="folder of labelled cases (any BraTS naming)")
    s.add_argument("--out", required=True, help="output JSON (with --folds: NAME_foldI.json)")
    s.add_argument("--split", default="70/15/15", help="train/validation/test percentages")
    s.add_argument("--folds", type=int, default=None, help="write K fold datalists (test split held out)")
    s.add_argument("--seed", type=int, default=0, help="shuffling seed of the split")
    s.add_argument("--dataset-dir", default=None, help="root the paths are relative to (default ROOT)")
    s.set_defaults(func=_datalist)

    s = sub.add_parser("train", help="train a model from a YAML config (MONAI/Ignite engines)")
    s.add_argument("config", nargs="+", help="experiment YAML (configs/*.yaml); several are merged, later ones override key by key")
    _out(s, "--output", default=None, help="run folder (default runs/<name>)")
    s.add_argument("--max-epochs", type=int, default=None, help="override the config's train#max_epochs")
    s.add_argument("--max-steps", type=int, default=None, help="stop after N iterations (smoke run)")
    s.add_argument("--max-val-cases", type=int, default=None, help="validate on the first N validation cases")
    s.add_argument("--resume", default=None, help="checkpoint.pt of an earlier run")
    s.add_argument("--dataset-dir", default=None, help="where the datalist's relative paths start (default: the one it records)")
    s.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu or cuda")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. train#lr=0.001")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--fold", type=int, default=None, help="cross-validation fold of a pool datalist: train on the others, predict this one")
    s.add_argument("--root", action="append", metavar="NAME=PATH", help="where a pool root is (e.g. extra=/data/extra), over the recorded one")
    s.set_defaults(func=_train)

    s = sub.add_parser("pool", help="write a training pool datalist over several roots, with stratified patient-level folds")
    s.add_argument("--root", action="append", required=True, metavar="NAME=PATH", help="a data root, e.g. brats2018=../shared/data/brats2018 (repeat)")
    s.add_argument("--out", required=True, help="output JSON (roots stored relative to its folder)")
    s.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    s.add_argument("--seed", type=int, default=0, help="fold shuffling seed")
    s.set_defaults(func=_pool)

    cv = sub.add_parser("cv", help="cross-validation on a pool datalist: train the folds, score out-of-fold, export the ensemble")
    cvs = cv.add_subparsers(dest="cv_command", required=True)
    s = cvs.add_parser("train", help="train one model per fold (resumes an interrupted fold, skips finished ones)")
    s.add_argument("config", nargs="+", help="experiment YAML whose data#datalist is a pool datalist; several are merged, later ones override key by key")
    _out(s, "--output", default=None, help="run folder (default runs/<name>); fold<i>/ inside")
    s.add_argument("--folds", default=None, help="comma-separated folds to train (default: all)")
    s.add_argument("--root", action="append", metavar="NAME=PATH", help="where a pool root is, over the recorded one")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. train#max_epochs=20")
    s.add_argument("--max-steps", type=int, default=None, help="stop each fold after N iterations (smoke run)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cv_train)
    s = cvs.add_parser("score", help="per-volume Dice / HD95 of the out-of-fold predictions, overall and per source")
    s.add_argument("run", help="the CV run folder")
    s.add_argument("--out", default=None, help="where cv.csv / cv.json go (default: the run folder)")
    s.add_argument("--min-component", type=int, default=None, help="fixed post-processing instead of the CV search")
    s.add_argument("--min-fraction", type=float, default=None, help="fixed post-processing instead of the CV search")
    s.add_argument("--et-to-necrosis", type=int, default=None, help="fixed post-processing instead of the CV search")
    s.add_argument("--no-search", action="store_true", help="no post-processing search (raw scores only)")
    s.add_argument("--tta", action="store_true", help="first predict the held-out cases again with flip TTA (fold<i>/oof_tta/), then score those")
    s.add_argument("--root", action="append", metavar="NAME=PATH", help="with --tta: where a pool root is, over the recorded one")
    s.set_defaults(func=_cv_score)
    s = cvs.add_parser("table", help="the experiments table (Markdown + chart) of scored CV runs")
    s.add_argument("runs", nargs="+", help="CV run folders, each scored by `cv score`")
    s.add_argument("--out", default="docs/experiments.md", help="Markdown file (a .png chart beside it)")
    s.add_argument("--seconds", action="append", metavar="NAME=S", help="measured inference s/case of a recipe (brainseg3d bench)")
    s.add_argument("--compare", action="append", metavar="NAME=EVAL.json", help="another model's `brainseg3d evaluate` JSON on pool cases it never saw, beside the OOF scores on the same cases")
    s.add_argument("--notes", default=None, help="a Markdown file appended to the table (reading, next steps)")
    s.set_defaults(func=_cv_table)
    s = cvs.add_parser("quality", help="fit and validate the per-case quality estimate on the out-of-fold predictions")
    s.add_argument("run", help="the CV run folder, scored by `cv score`")
    s.add_argument("--bundle", default=None, help="write the calibration into this bundle's configs/quality.json")
    s.add_argument("--out", default=None, help="where quality.json / quality.png go (default: the run folder)")
    s.add_argument("--review-share", type=float, default=0.25, help="share of the out-of-fold cases under the review threshold (default 0.25)")
    s.set_defaults(func=_cv_quality)
    s = cvs.add_parser("export", help="make the fold models (final weights) the bundle's ensemble, with the chosen post-processing")
    s.add_argument("run", help="the CV run folder")
    s.add_argument("--folds", default=None, help="comma-separated folds to include (default: all)")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    s.add_argument("--no-torchscript", action="store_true", help="skip models/model.ts")
    s.add_argument("--fp32", action="store_true", help="store fp32 weights in model.pt (default fp16: half the size)")
    s.set_defaults(func=_cv_export)

    s = sub.add_parser("bundle", help="maintain the MONAI bundle")
    bs = s.add_subparsers(dest="bundle_command", required=True)
    s = bs.add_parser("sync", help="copy the package modules the bundle vendors into its scripts/ and check its version")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    s.add_argument("--check", action="store_true", help="only report what differs (exit 1 if anything does)")
    s.set_defaults(func=_bundle_sync)

    s = sub.add_parser("export", help="put a training checkpoint into the bundle (model.pt + TorchScript model.ts)")
    s.add_argument("checkpoint", help="a training run's best_model.pt / final_model.pt")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one, whose weights are replaced)")
    s.add_argument("--no-torchscript", action="store_true", help="skip models/model.ts")
    s.set_defaults(func=_export)

    s = sub.add_parser("segment", help="segment one case, a folder of cases, a 4D NIfTI, or DICOM series folders")
    s.add_argument("input", help="a case folder, a folder of cases, a 4D NIfTI, DICOM series folders, or a text file listing them (relative lines start at the file's folder)")
    s.add_argument("output_dir", help="where <case>.nii.gz, <case>.json and summary.json go (created if needed)")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped model)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when there is one")
    s.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bfloat16 where the CPU/GPU has it, else fp32")
    s.add_argument("--labels", default="brats", choices=list(LABEL_SCHEMES), help="ET written as 4 (brats) or 3 (brats2023)")
    s.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    s.add_argument("--members", type=int, default=None, help="use the first N members of the ensemble (default: all; 1 = the fast single-model option)")
    s.add_argument("--min-component", type=int, default=None, help="drop tumour components smaller than N voxels (default: the bundle's, chosen by CV; 0 = off)")
    s.add_argument("--min-fraction", type=float, default=None, help="also drop tumour components smaller than this fraction of the largest (default: the bundle's, chosen by CV; 0 = off)")
    s.add_argument("--et-to-necrosis", type=int, default=None, help="an enhancing tumour smaller than N voxels becomes necrosis (default: the bundle's; 0 = off)")
    s.add_argument("--register", default="auto", choices=["auto", "always", "never"],
                   help="rigidly register the modalities to T1c (SimpleITK) when they are on different grids (auto)")
    s.add_argument("--skull-strip", default="auto", choices=["auto", "never"], help="zero the input outside a brain mask when it does not look skull-stripped (auto)")
    s.add_argument("--overwrite", action="store_true", help="redo cases whose output exists")
    s.add_argument("--workers", type=int, default=None,
                   help="cases read/preprocessed in parallel ahead of inference (default: 1 on CPU, up to 12 on a GPU)")
    s.add_argument("--shard", default=None, metavar="I/N", help="segment only cases I, I+N, ... (0-based; under torchrun: the rank)")
    s.add_argument("--preview", action="store_true", help="write <case>.png overlay montages")
    s.add_argument("--output-format", choices=OUTPUT_FORMATS, default="nifti",
                   help="also write the mask as NRRD or MetaImage (uint8, the input's ITK geometry) beside <case>.nii.gz; "
                        "'input': in the input files' format (NRRD / MetaImage inputs, as 3D Slicer saves them)")
    s.add_argument("--colour-table", action="store_true", help="write a 3D Slicer colour table beside the masks")
    s.add_argument("--uncertainty", action="store_true",
                   help="also write <case>_uncertainty.nii.gz: per-voxel uncertainty in percent (0 sure, 100 a coin flip) on the input grid")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_segment)

    s = sub.add_parser("merge", help="merge the per-shard summaries of a sharded segment run into summary.json")
    s.add_argument("output_dir", help="the output folder all shards wrote into")
    s.set_defaults(func=_merge)

    s = sub.add_parser("evaluate", help="Dice and HD95 per case on WT / TC / ET")
    s.add_argument("pred_dir", help="folder of predicted masks (<case>.nii.gz)")
    s.add_argument("gt_root", help="folder of the cases with their labels (any BraTS naming)")
    s.add_argument("--out", default=None, help="CSV per case (+ JSON summary beside it)")
    s.set_defaults(func=_evaluate)

    s = sub.add_parser("compare", help="train configs under one time budget and score them on the test split")
    s.add_argument("configs", nargs="+", help="experiment YAMLs to compare")
    s.add_argument("--minutes", type=float, default=8.0, help="CPU minutes of training per config")
    s.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is a fair budget on a busy machine)")
    s.add_argument("--runs-dir", dest="runs_dir", default="runs/compare", help="folder of the runs")
    s.add_argument("--output", dest="runs_dir", default="runs/compare", help=argparse.SUPPRESS)  # the earlier spelling
    s.add_argument("--out", default=None, help="Markdown table")
    s.add_argument("--dataset-dir", default=None, help="where the datalist's relative paths start (default: the one it records)")
    s.set_defaults(func=_compare)

    s = sub.add_parser("score", help="per-volume Dice / HD95 of a training run's best model on a datalist split")
    s.add_argument("run_dir", help="a training run folder (best_model.pt, config.yaml)")
    s.add_argument("--split", default="validation", choices=["training", "validation", "testing"], help="which datalist split to score")
    s.add_argument("--bf16", action="store_true", help="infer under bfloat16 autocast")
    s.add_argument("--out", default=None, help="CSV per case (+ JSON summary beside it)")
    s.set_defaults(func=_score)

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
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    s.add_argument("--out", default=None, help="JSON report")
    s.set_defaults(func=_bench)

    s = sub.add_parser("demo", help="segment the bundled sample case and print its Dice")
    s.add_argument("--sample", default=str((Path(__file__).parent / "_data" / "sample_data").resolve()), help="folder of sample cases (default: the shipped sample)")
    _out(s, "--output-dir", default="outputs/demo", help="where the mask, report and preview go")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_demo)
    s = sub.add_parser("app", help="start the web demo (Streamlit) on http://127.0.0.1:PORT (needs brainseg3d[web])")
    s.add_argument("--port", type=int, default=8501, help="TCP port on 127.0.0.1 (0: a free one)")
    s.set_defaults(func=_app)
    _describe(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
