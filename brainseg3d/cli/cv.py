"""Cross-validation on a pool datalist (``brainseg3d cv train|average|score|compare|table|quality|export``)."""

from __future__ import annotations

import sys
from pathlib import Path

from brainseg3d.cli._common import _out, _overrides, _views


def _train(args) -> int:
    """Run ``cv train``; returns its exit status."""
    from brainseg3d.training.cv import train_folds
    from brainseg3d.data.pool import parse_roots

    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    summaries = train_folds(args.config, output=args.out, folds=folds, roots=parse_roots(args.root),
                            overrides=_overrides(args.set), progress=not args.quiet, max_steps=args.max_steps)
    for s in summaries:
        print(f"fold {s.get('fold')}: {s['epochs']} epochs, {s['train_minutes']} min -> {s['final_model']}")
    return 0


def _average(args) -> int:
    """Run ``cv average``; returns its exit status."""
    from brainseg3d.training.cv import average_runs

    try:
        written = average_runs(args.runs, args.out, name=args.name)
    except ValueError as e:
        raise SystemExit(f"brainseg3d {e}")
    for path in written:
        print(path)
    return 0


def _score(args) -> int:
    """Run ``cv score``; returns its exit status."""
    from brainseg3d.training.cv import format_summary, score_run

    post = None
    if args.min_component is not None or args.et_to_necrosis is not None or args.min_fraction is not None or args.fill_core_holes:
        post = {"min_component": args.min_component or 0, "min_fraction": args.min_fraction or 0.0, "et_to_necrosis": args.et_to_necrosis or 0,
                "fill_core_holes": bool(args.fill_core_holes)}
    oof_name = "oof"
    if args.tta:
        from brainseg3d.training.cv import predict_out_of_fold
        from brainseg3d.data.pool import parse_roots

        # with --views: the views and the flips in one pass, as `brainseg3d segment --tta` reads a multi-view bundle
        oof_name = "oof_tta" + ("_" + "+".join(args.views) if args.views else "")
        n = predict_out_of_fold(args.run, oof_name, tta=True, roots=parse_roots(args.root), views=args.views)
        print(f"{n} cases predicted with flip TTA" + (f" in views {'+'.join(args.views)}" if args.views else ""), file=sys.stderr)
    elif args.views:
        from brainseg3d.data.pool import parse_roots
        from brainseg3d.training.cv import view_out_of_fold

        oof_name = view_out_of_fold(args.run, args.views, roots=parse_roots(args.root))
        print(f"out-of-fold predictions of views {'+'.join(args.views)}: {oof_name}", file=sys.stderr)
    summary = score_run(args.run, args.out, post=post, choose=not args.no_search, oof_name=oof_name)
    print(format_summary(summary))
    print(Path(args.out or args.run) / "cv.json")
    return 0


def _compare(args) -> int:
    """Run ``cv compare``; returns its exit status."""
    from brainseg3d.evaluation.paired import format_comparison, paired_comparison
    from brainseg3d.io import atomic_path, write_json

    a, b = (_score_file(p, args.raw) for p in (args.a, args.b))
    res = paired_comparison(a, b, metric=args.metric, tie=args.tie)
    text = format_comparison(res)
    print(text)
    if args.out:
        out = Path(args.out)
        write_json(res, out.with_suffix(".json"))
        with atomic_path(out.with_suffix(".md")) as tmp:
            Path(tmp).write_text(text + "\n")
        print(out.with_suffix(".md"))
    return 0


def _score_file(path: str, raw: bool) -> Path:
    """A record folder's ``cv.csv`` (``cv_raw.csv`` with ``raw``), or the CSV itself."""
    p = Path(path)
    return p / ("cv_raw.csv" if raw else "cv.csv") if p.is_dir() else p


def _table(args) -> int:
    """Run ``cv table``; returns its exit status."""
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


def _quality(args) -> int:
    """Run ``cv quality``; returns its exit status."""
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


def _strata(args) -> int:
    """Run ``cv strata``; returns its exit status."""
    from brainseg3d.data.pool import parse_roots
    from brainseg3d.evaluation.paired import read_scores
    from brainseg3d.evaluation.strata import format_strata, plot_strata, pool_volumes, stratify
    from brainseg3d.io import atomic_path, write_json

    scores = read_scores(_score_file(args.record, args.raw))
    volumes = pool_volumes(args.pool, parse_roots(args.root), cases=set(scores))
    res = stratify(scores, volumes, region=args.region, strata=args.strata)
    text = format_strata(res, f"{Path(args.record).name}{' (raw)' if args.raw else ''}: out-of-fold Dice")
    print(text)
    out = Path(args.out) if args.out else Path(args.record) / f"strata_{args.region}{'_raw' if args.raw else ''}"
    write_json(res, out.with_suffix(".json"))
    with atomic_path(out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(text + "\n")
    print(plot_strata(res, out.with_suffix(".png")))
    return 0


def _export(args) -> int:
    """Run ``cv export``; returns its exit status."""
    import json as _json

    from brainseg3d.bundle import export_ensemble, network_from_run, recipe_from_run

    run = Path(args.run)
    folds = sorted(run.glob("fold*/final_model.pt"))
    if args.folds:
        want = {f"fold{int(f)}" for f in args.folds.split(",")}
        folds = [f for f in folds if f.parent.name in want]
    if not folds:
        raise FileNotFoundError(f"no fold*/final_model.pt under {run}")
    post = run / "postprocessing.json"
    post = _json.loads(post.read_text()) if post.exists() else None
    unet, k = network_from_run(run)  # the run's own architecture and recipe go into the bundle
    recipe, datalist = recipe_from_run(run)
    print(export_ensemble(folds, args.bundle, torchscript=not args.no_torchscript, postprocessing=post, half=not args.fp32,
                          unet=unet, k=k, recipe=recipe, datalist=datalist, views=args.views))
    return 0


def add_parser(sub) -> None:
    """Register the ``cv`` command on the top-level subparsers."""
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
    s.set_defaults(func=_train)
    s = cvs.add_parser("average", help="average the final weights of several runs fold by fold (one network per fold, a model soup)")
    s.add_argument("runs", nargs="+", help="CV run folders with the same folds and architecture (fold<i>/final_model.pt); a 2.5D run with fewer "
                   "neighbour slices is widened to the most (zero weights on the added slices); give the widest run last")
    s.add_argument("--out", required=True, help="the averaged run's folder")
    s.add_argument("--name", default=None, help="recipe name recorded in each fold's summary.json")
    s.set_defaults(func=_average)
    s = cvs.add_parser("score", help="per-volume Dice / HD95 of the out-of-fold predictions, overall and per source")
    s.add_argument("run", help="the CV run folder")
    s.add_argument("--out", default=None, help="where cv.csv / cv.json go (default: the run folder)")
    s.add_argument("--min-component", type=int, default=None, help="fixed post-processing instead of the CV search")
    s.add_argument("--min-fraction", type=float, default=None, help="fixed post-processing instead of the CV search")
    s.add_argument("--et-to-necrosis", type=int, default=None, help="fixed post-processing instead of the CV search")
    s.add_argument("--fill-core-holes", action="store_true", help="fixed post-processing instead of the CV search")
    s.add_argument("--no-search", action="store_true", help="no post-processing search (raw scores only)")
    s.add_argument("--tta", action="store_true", help="first predict the held-out cases again with flip TTA (fold<i>/oof_tta/; "
                   "with --views, in those views at once: fold<i>/oof_tta_<view>+<view>/), then score those")
    s.add_argument("--views", type=_views, default=None, metavar="VIEW,VIEW",
                   help="first predict the held-out cases again with each fold model slicing these views (axial, coronal, "
                        "sagittal; fold<i>/oof_<view>/), then score the mean of their probabilities")
    s.add_argument("--root", action="append", metavar="NAME=PATH", help="with --tta / --views: where a pool root is, over the recorded one")
    s.set_defaults(func=_score)
    s = cvs.add_parser("compare", help="paired per-case comparison of two scored CV records (B against A, on the cases both scored)")
    s.add_argument("a", help="the reference: a record or run folder scored by `cv score` (its cv.csv), or a per-case CSV")
    s.add_argument("b", help="the candidate, the same way")
    s.add_argument("--raw", action="store_true", help="compare the folders' raw scores (cv_raw.csv: threshold 0.5, no rules)")
    s.add_argument("--metric", choices=["Dice", "HD95"], default="Dice", help="per-case score compared (default Dice)")
    s.add_argument("--tie", type=float, default=0.005, help="a per-case difference this small counts as the same (default 0.005)")
    s.add_argument("--out", default=None, help="also write OUT.md and OUT.json")
    s.set_defaults(func=_compare)
    s = cvs.add_parser("table", help="the experiments table (Markdown + chart) of scored CV runs")
    s.add_argument("runs", nargs="+", help="CV run folders, each scored by `cv score`")
    s.add_argument("--out", default="docs/experiments.md", help="Markdown file (a .png chart beside it)")
    s.add_argument("--seconds", action="append", metavar="NAME=S", help="measured inference s/case of a recipe (brainseg3d bench)")
    s.add_argument("--compare", action="append", metavar="NAME=EVAL.json", help="another model's `brainseg3d evaluate` JSON on pool cases it never saw, beside the OOF scores on the same cases")
    s.add_argument("--notes", default=None, help="a Markdown file appended to the table (reading, next steps)")
    s.set_defaults(func=_table)
    s = cvs.add_parser("quality", help="fit and validate the per-case quality estimate on the out-of-fold predictions")
    s.add_argument("run", help="the CV run folder, scored by `cv score`")
    s.add_argument("--bundle", default=None, help="write the calibration into this bundle's configs/quality.json")
    s.add_argument("--out", default=None, help="where quality.json / quality.png go (default: the run folder)")
    s.add_argument("--review-share", type=float, default=0.25, help="share of the out-of-fold cases under the review threshold (default 0.25)")
    s.set_defaults(func=_quality)
    s = cvs.add_parser("strata", help="out-of-fold Dice by ground-truth tumour size: strata of one region's volume, overall and per source (table + scatter)")
    s.add_argument("record", help="a record or run folder scored by `cv score` (its cv.csv), or a per-case CSV")
    s.add_argument("--pool", default="data_lists/pool60.json", help="the pool datalist the record was scored on (its labels give the volumes)")
    s.add_argument("--root", action="append", metavar="NAME=PATH", help="where a pool root is, over the recorded one")
    s.add_argument("--region", choices=["WT", "TC", "ET"], default="ET", help="the region whose volume makes the strata (default ET)")
    s.add_argument("--strata", type=int, default=3, help="number of strata: volume quantiles over the scored cases (default 3)")
    s.add_argument("--raw", action="store_true", help="the raw scores (cv_raw.csv: threshold 0.5, no rules)")
    s.add_argument("--out", default=None, help="OUT.md, OUT.json and OUT.png (default RECORD/strata_<region>)")
    s.set_defaults(func=_strata)
    s = cvs.add_parser("export", help="make the fold models (final weights) the bundle's ensemble, with the chosen post-processing")
    s.add_argument("run", help="the CV run folder")
    s.add_argument("--folds", default=None, help="comma-separated folds to include (default: all)")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    s.add_argument("--no-torchscript", action="store_true", help="skip models/model.ts")
    s.add_argument("--fp32", action="store_true", help="store fp32 weights in model.pt (default fp16: half the size)")
    s.add_argument("--views", type=_views, default=None, metavar="VIEW,VIEW",
                   help="the slice views inference averages (default: the bundle's); choose them with `cv score RUN --views`")
    s.set_defaults(func=_export)

