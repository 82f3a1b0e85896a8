"""Segment cases, folders, 4D NIfTI or DICOM series (``brainseg3d segment IN OUT``)."""

from __future__ import annotations

import argparse

import os
import sys
from pathlib import Path

from brainseg3d.core.labels import LABEL_SCHEMES
from brainseg3d.io import OUTPUT_FORMATS
from brainseg3d.cli._common import _n, _views


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


def run(args) -> int:
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
        predictor = Predictor(args.bundle, device=args.device, precision=args.precision, labels=args.labels, tta=args.tta, members=args.members, views=args.views,
                              min_component=args.min_component, et_to_necrosis=args.et_to_necrosis, min_fraction=args.min_fraction,
                              fill_core_holes=args.fill_core_holes, register=args.register, skull_strip=args.skull_strip,
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


def add_parser(sub) -> None:
    """Register the ``segment`` command on the top-level subparsers."""
    s = sub.add_parser("segment", help="segment one case, a folder of cases, a 4D NIfTI, or DICOM series folders")
    s.add_argument("input", help="a case folder, a folder of cases, a 4D NIfTI, DICOM series folders, or a text file listing them (relative lines start at the file's folder)")
    s.add_argument("output_dir", help="where <case>.nii.gz, <case>.json and summary.json go (created if needed)")
    s.add_argument("--bundle", default=None, help="bundle folder (default: the shipped model)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when there is one")
    s.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bfloat16 where the CPU/GPU has it, else fp32")
    s.add_argument("--labels", default="brats", choices=list(LABEL_SCHEMES), help="ET written as 4 (brats) or 3 (brats2023)")
    s.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    s.add_argument("--members", type=int, default=None, help="use the first N members of the ensemble (default: all; 1 = the fast single-model option)")
    s.add_argument("--views", type=_views, default=None, metavar="VIEW[,VIEW]",
                   help="slice views averaged, of axial, coronal, sagittal (default: the bundle's; axial = the fast option)")
    s.add_argument("--min-component", type=int, default=None, help="drop tumour components smaller than N voxels (default: the bundle's, chosen by CV; 0 = off)")
    s.add_argument("--min-fraction", type=float, default=None, help="also drop tumour components smaller than this fraction of the largest (default: the bundle's, chosen by CV; 0 = off)")
    s.add_argument("--et-to-necrosis", type=int, default=None, help="an enhancing tumour smaller than N voxels becomes necrosis (default: the bundle's; 0 = off)")
    s.add_argument("--fill-core-holes", default=None, action=argparse.BooleanOptionalAction,
                   help="edema enclosed by the tumour core in a slice becomes necrosis (default: the bundle's, chosen by CV)")
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
    s.set_defaults(func=run)

