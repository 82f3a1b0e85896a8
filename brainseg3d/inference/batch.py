"""Segment many cases: resume, atomic writes, per-case errors, overlapped I/O.

While case *i* is inferred, the next cases are read and preprocessed in background threads
(gzip decoding, numpy and torch release the GIL) and finished masks are written in others, so a
batch runs at the speed of the slowest stage rather than the sum of them. On a CPU one loader
thread is enough (inference is the slow stage); on a GPU, reading and writing are, so several
cases load at once (``workers``). The main thread runs only the device's part of a case
(:meth:`Predictor.predict_loaded`); inverting the preprocessing onto the input grid and writing
happen in the writer threads (:meth:`Predictor.finish_loaded`). Memory stays flat: at most
``workers`` cases are loading, one computing and ``2 * writers`` queued for writing at any time.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from brainseg3d.core.cases import Case, CaseError
from brainseg3d.inference.predictor import Prediction, Predictor
from brainseg3d.io import (MASK_FORMATS, OUTPUT_FORMATS, OutputError, check_writable_dir, clean_stale, describe_os_error, mask_format_for, mask_is_complete,
                 save_label_image, save_label_like, write_colour_table, write_json, write_preview)

__all__ = ["CaseResult", "default_workers", "segment_cases", "output_path", "write_summary", "merge_summaries"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class CaseResult:
    case_id: str
    status: str  # "ok", "skipped", "failed"
    path: str | None = None
    error: str | None = None
    seconds: float | None = None
    review: bool | None = None  # the quality estimate flags the mask for review
    reasons: list | None = None


def output_path(out_dir: str | os.PathLike, case_id: str) -> Path:
    return Path(out_dir) / f"{case_id}.nii.gz"


def _finish_and_write(predictor: Predictor, loaded, label, case: Case, out_dir: Path, preview: bool, t_predict: float,
                      output_format: str = "nifti"):
    """Writer thread: post-process a predicted case onto its input grid, then write it
    (``t_predict``: when its prediction started, for the report's ``seconds_inference``).
    Returns the mask's path and the report's ``quality`` block (or ``None``)."""
    pred = predictor.finish_loaded(loaded, label, t_predict)
    return _write(pred, case, out_dir, preview, predictor.labels, output_format), pred.report.get("quality")


def _extra_format(pred: Prediction, output_format: str) -> str | None:
    """The format of the mask's extra copy, or ``None`` (NIfTI only)."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    if output_format == "nifti":
        return None
    if output_format == "input":
        return mask_format_for(pred.grid_file) if pred.grid_file is not None else None
    return output_format


def uncertainty_path(out_dir: str | os.PathLike, case_id: str) -> Path:
    return Path(out_dir) / f"{case_id}_uncertainty.nii.gz"


def _write(pred: Prediction, case: Case, out_dir: Path, preview: bool, labels: str, output_format: str = "nifti") -> Path:
    """Write a case's outputs; the NIfTI mask goes last: its presence means the case is complete
    (resume skips it). When any write fails (disk full, permissions), the outputs of this case
    written so far are removed, so no report is ever left without its mask. ``output_format``
    (:data:`OUTPUT_FORMATS`) adds ``<case>.nrrd`` / ``<case>.mha`` with the ITK geometry of
    the input file the mask's grid comes from (or of the mask itself, for a NIfTI input)."""
    case_id = case.case_id
    path = output_path(out_dir, case_id)
    written: list[Path] = []
    try:
        written.append(out_dir / f"{case_id}.json")
        write_json(pred.report, written[-1])
        if pred.uncertainty is not None:
            written.append(uncertainty_path(out_dir, case_id))
            save_label_image(pred.uncertainty, written[-1])
        if preview:
            title = f"{case_id}  WT {pred.report['volumes']['whole_tumour_ml']:.1f} ml"
            written.append(out_dir / f"{case_id}.png")
            write_preview(_background(pred), np.asarray(pred.label.dataobj), written[-1], title=title, labels_scheme=labels, affine=pred.label.affine)
        fmt = _extra_format(pred, output_format)
        if fmt is not None:
            written.append(out_dir / f"{case_id}{MASK_FORMATS[fmt]}")
            like = pred.grid_file if pred.grid_file is not None and mask_format_for(pred.grid_file) else None  # NIfTI: its affine
            save_label_like(pred.label, written[-1], like)
        save_label_image(pred.label, path)
    except BaseException as e:
        for f in written:
            try:
                f.unlink()
            except OSError:
                pass
        if isinstance(e, OSError):
            raise OutputError(f"{describe_os_error(e)}; no output kept for this case") from e
        raise
    return path


def _error_message(e: BaseException) -> str:
    if isinstance(e, CaseError):
        return e.problem
    if isinstance(e, OutputError):
        return str(e)
    if isinstance(e, OSError):
        return describe_os_error(e)
    return f"{type(e).__name__}: {e}"


def default_workers(predictor: Predictor) -> int:
    """Loader threads for a batch: 1 on CPU (inference is the slow stage and owns the cores);
    on a GPU, where reading and writing are the slow stages, all cores but 4, at most 12
    (on a 16-core H200 host: 2.7 / 3.8 / 4.9 / 5.7 cases/s with 2 / 4 / 8 / 12 loaders,
    docs/benchmarks.md)."""
    if predictor.device.type == "cpu":
        return 1
    return max(2, min(12, (os.cpu_count() or 2) - 4))


def segment_cases(
    cases: Sequence[Case],
    out_dir: str | os.PathLike,
    predictor: Predictor,
    overwrite: bool = False,
    preview: bool = False,
    colour_table: bool = False,
    progress: bool = True,
    prefetch: bool = True,
    workers: int | None = None,
    output_format: str = "nifti",
) -> list[CaseResult]:
    """Segment ``cases`` into ``out_dir`` (``<case>.nii.gz`` + ``<case>.json`` [+ ``<case>.png``]).

    A case that fails is reported with its reason and the batch goes on. Existing outputs are
    skipped unless ``overwrite``.

    Args:
        workers: cases read and preprocessed in parallel (threads) ahead of the one being
            inferred; half as many threads write. ``None``: :func:`default_workers`.
        prefetch: ``False`` reads each case only when it is its turn (no look-ahead).
        output_format: also write the mask as NRRD or MetaImage (:data:`OUTPUT_FORMATS`;
            ``input``: in the format of the input files, for NRRD / MetaImage inputs).

    Several runs may write one folder at once (shards): every temporary carries its writer's
    PID, and start-up removes only those of runs that are gone. A case's temporary data
    (registration, skull stripping) goes to a work folder inside ``out_dir``, removed when the
    case is done (or, after a kill, by the next run).

    Returns:
        One :class:`CaseResult` per case, in input order.

    Raises:
        OutputError: ``out_dir`` cannot be created or written (checked before any work).
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    out_dir = check_writable_dir(out_dir)
    clean_stale(out_dir)  # temporaries and work folders of runs that were killed (never a live run's)
    if colour_table:
        write_colour_table(out_dir / f"brats_colours_{predictor.labels}.ctbl", predictor.labels)
    results: dict[str, CaseResult] = {}
    todo = []
    for c in cases:
        path = output_path(out_dir, c.case_id)
        if not overwrite and path.exists():
            ok, why = mask_is_complete(path)
            if ok:
                results[c.case_id] = CaseResult(c.case_id, "skipped", str(path))
                continue
            logger.warning("%s: the existing mask %s is incomplete (%s): segmenting it again", c.case_id, path.name, why)
        todo.append(c)
    previous_root = getattr(predictor, "workdir_root", None)
    predictor.workdir_root = out_dir
    try:
        _run(todo, out_dir, predictor, results, preview, progress, prefetch, workers, output_format)
    finally:
        predictor.workdir_root = previous_root
    return [results[c.case_id] for c in cases]


def _run(todo, out_dir: Path, predictor: Predictor, results: dict, preview: bool, progress: bool, prefetch: bool,
         workers: int | None, output_format: str = "nifti") -> None:

    workers = default_workers(predictor) if workers is None else max(1, int(workers))
    workers = min(workers, max(1, len(todo)))  # one case: one loader with all the cores
    n_writers = max(1, workers // 2)
    init = {}
    if predictor.device.type != "cpu":
        # each pool thread gets its share of the cores for its own torch ops (a new thread
        # would otherwise start with all cores: N loaders x all cores oversubscribes the CPU)
        init = dict(initializer=torch.set_num_threads, initargs=(max(1, (os.cpu_count() or 1) // (workers + n_writers)),))
    bar = tqdm(total=len(todo), desc="segment", unit="case", disable=not progress, file=sys.stderr)
    with ThreadPoolExecutor(workers, thread_name_prefix="load", **init) as loader, ThreadPoolExecutor(n_writers, thread_name_prefix="write", **init) as writer:
        # look-ahead: up to `workers` cases are read and preprocessed while one is inferred
        ahead = workers if prefetch else 0
        loads: collections.deque[Future] = collections.deque(loader.submit(predictor.load, c) for c in todo[:ahead])
        writes: collections.deque[tuple[str, Future, float]] = collections.deque()

        def finish_write():
            case_id, fut, t0 = writes.popleft()
            try:
                path, quality = fut.result()
                results[case_id] = CaseResult(case_id, "ok", str(path), seconds=round(time.perf_counter() - t0, 3),
                                              review=None if quality is None else quality["review"],
                                              reasons=None if quality is None else quality["reasons"])
            except Exception as e:
                msg = _error_message(e)
                logger.error("%s: %s", case_id, msg)
                results[case_id] = CaseResult(case_id, "failed", error=msg)

        for i, case in enumerate(todo):
            t0 = time.perf_counter()
            try:
                if prefetch:
                    fut = loads.popleft()
                    if i + ahead < len(todo):
                        loads.append(loader.submit(predictor.load, todo[i + ahead]))
                    loaded = fut.result()
                else:
                    loaded = predictor.load(case)
                t_predict = time.perf_counter()  # the report's seconds_inference starts here, as in Predictor.segment_loaded
                try:
                    label = predictor.predict_loaded(loaded)  # the device's part; the rest goes to a writer
                except BaseException:
                    predictor.discard(loaded)
                    raise
                writes.append((case.case_id, writer.submit(_finish_and_write, predictor, loaded, label, case, out_dir, preview, t_predict,
                                                           output_format), t0))
                del loaded, label
            except Exception as e:  # one bad case must not stop the batch
                msg = _error_message(e)
                logger.error("%s: %s", case.case_id, msg)
                results[case.case_id] = CaseResult(case.case_id, "failed", error=msg)
            # back-pressure: when writing is slower than inference, wait instead of queueing cases
            while writes and (writes[0][1].done() or len(writes) > 2 * n_writers):
                finish_write()
            bar.update(1)
            bar.set_postfix_str(case.case_id)
        while writes:
            finish_write()
    bar.close()


def _background(pred: Prediction) -> np.ndarray:
    """The preview's grey-scale background: FLAIR (or the registration reference) on the mask grid."""
    import nibabel as nib

    from brainseg3d.core.cases import channel_layout

    arr = np.asarray(nib.load(str(pred.background)).dataobj, dtype=np.float32)
    if arr.ndim > 3:  # a 4D input: its FLAIR channel
        arr = arr.reshape(arr.shape[:3] + (-1,))[..., 3] if channel_layout(arr.shape) == "last" else arr[3]
    return arr


def write_summary(results: Sequence[CaseResult], out_dir: str | os.PathLike, shard: tuple[int, int] | None = None,
                  warnings: Sequence[str] = ()) -> Path:
    """``summary.json`` (or ``summary.shard-I-of-N.json`` for one shard) listing every case's result
    and the run's ``warnings`` (discovery: cases sharing an id, stray files).

    It is the latest run's; each run also keeps its own copy in ``summaries/`` (named by the time
    it finished, UTC), so a second run into the same folder does not erase the first one's."""
    import datetime

    name = f"summary.shard-{shard[0]}-of-{shard[1]}.json" if shard else "summary.json"
    now = datetime.datetime.now(datetime.timezone.utc)
    doc = {
        "finished": now.isoformat(timespec="seconds"),
        "shard": list(shard) if shard else None,
        "cases": [dataclasses.asdict(r) for r in results],
        **{k: sum(r.status == k for r in results) for k in ("ok", "skipped", "failed")},
        "review": [r.case_id for r in results if r.review],
        "warnings": list(warnings),
    }
    path = write_json(doc, Path(out_dir) / name)  # the one that matters first
    stamp = now.strftime("%Y%m%dT%H%M%S.%f") + f"-{os.getpid()}"
    try:  # the run's own copy: kept when it fits (a full disk must not cost the summary above)
        write_json(doc, Path(out_dir) / "summaries" / name.replace("summary", f"summary-{stamp}", 1))
    except OSError as e:
        logger.warning("the run's copy of %s was not kept in summaries/: %s", name, e)
    return path


def merge_summaries(out_dir: str | os.PathLike) -> dict:
    """Merge ``summary.shard-*-of-N.json`` into one ``summary.json``.

    Raises:
        ValueError: shards are missing, or two shards claim one case.
    """
    import json

    out_dir = Path(out_dir)
    parts = sorted(out_dir.glob("summary.shard-*-of-*.json"))
    if not parts:
        raise ValueError(f"{out_dir}: no shard summaries (summary.shard-I-of-N.json)")
    docs = [json.loads(p.read_text()) for p in parts]
    n = {d["shard"][1] for d in docs}
    got = sorted(d["shard"][0] for d in docs)
    if len(n) != 1 or got != list(range(n.pop())):
        raise ValueError(f"{out_dir}: incomplete or mixed shards {got}")
    cases = [c for d in docs for c in d["cases"]]
    ids = [c["case_id"] for c in cases]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{out_dir}: a case appears in two shards")
    merged = {
        "shards": len(docs),
        "cases": sorted(cases, key=lambda c: c["case_id"]),
        **{k: sum(c["status"] == k for c in cases) for k in ("ok", "skipped", "failed")},
        "review": sorted(c["case_id"] for c in cases if c.get("review")),
    }
    write_json(merged, out_dir / "summary.json")
    return merged
