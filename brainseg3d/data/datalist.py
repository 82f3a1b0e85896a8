"""Patient-level MONAI datalists: train / validation / test splits and k folds.

The file is a MONAI datalist (``monai.data.load_decathlon_datalist`` reads it) with the keys
``training``, ``validation`` and ``testing``; each item is
``{"case": id, "image": [t1, t1ce, t2, flair], "label": seg}`` with paths relative to the
``dataset_dir`` the file records, so the file stays valid when the data moves.

Example:
    >>> from brainseg3d.data.datalist import make_datalist, load_datalist
    >>> dl = make_datalist("../shared/data/brats2018", split=(70, 15, 15), seed=0)
    >>> items = load_datalist("data_lists/brats2018.json", "validation", dataset_dir="../shared/data/brats2018")
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Sequence

from brainseg3d.core.cases import Case, discover
from brainseg3d.core.training import absolute_item

__all__ = ["split_cases", "make_datalist", "write_datalist", "load_datalist", "absolute_item"]


def _split_sizes(n: int, split: Sequence[float]) -> tuple[int, int, int]:
    total = float(sum(split))
    fr = [s / total for s in split]
    n_val = round(n * fr[1])
    n_test = round(n * fr[2])
    if fr[1] > 0 and n_val == 0 and n >= 3:
        n_val = 1
    if fr[2] > 0 and n_test == 0 and n >= 3:
        n_test = 1
    return n - n_val - n_test, n_val, n_test


def split_cases(case_ids: Sequence[str], split=(70, 15, 15), seed: int = 0) -> dict[str, list[str]]:
    """Split case ids (one per patient) into disjoint train / validation / test lists.

    Deterministic for a seed and independent of the input order.
    """
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise ValueError("case ids must be unique (one per patient)")
    random.Random(seed).shuffle(ids)
    n_tr, n_val, _ = _split_sizes(len(ids), split)
    return {
        "training": sorted(ids[:n_tr]),
        "validation": sorted(ids[n_tr : n_tr + n_val]),
        "testing": sorted(ids[n_tr + n_val :]),
    }


def make_datalist(
    root: str | os.PathLike,
    split=(70, 15, 15),
    seed: int = 0,
    folds: int | None = None,
    dataset_dir: str | os.PathLike | None = None,
) -> dict | list[dict]:
    """Build the datalist (or, with ``folds``, one datalist per fold) for the cases under root.

    With ``folds=K`` the test split is held out as in ``split`` and the remaining cases are
    cut into K folds; fold i validates on its i-th part and trains on the others.
    Cases with problems (missing modality, ...) raise: a datalist must hold usable cases only.
    """
    cases = discover(root)
    for c in cases:
        c.check()
    by_id: dict[str, Case] = {c.case_id: c for c in cases}
    base = Path(dataset_dir or (root if Path(root).is_dir() else Path(root).parent)).resolve()
    parts = split_cases(list(by_id), split, seed)

    def items(ids):
        return [by_id[i].to_datalist_item(base) for i in ids]

    def doc(tr, va, te, extra=None):
        out = {
            "description": "brainseg3d patient-level split",
            "dataset_dir": str(base),
            "seed": seed,
            "split": list(split),
            **(extra or {}),
            "training": items(tr),
            "validation": items(va),
            "testing": items(te),
        }
        return out

    if not folds:
        return doc(parts["training"], parts["validation"], parts["testing"])
    pool = sorted(parts["training"] + parts["validation"])
    random.Random(seed + 1).shuffle(pool)
    chunks = [sorted(pool[i::folds]) for i in range(folds)]
    return [
        doc(
            sorted(x for j, ch in enumerate(chunks) if j != i for x in ch),
            chunks[i],
            parts["testing"],
            {"fold": i, "folds": folds},
        )
        for i in range(folds)
    ]


def write_datalist(doc: dict, out: str | os.PathLike, relative_to: str | os.PathLike | None = None) -> Path:
    """Write a datalist JSON. ``dataset_dir`` is stored relative to the file's folder when
    ``relative_to`` is given (so a committed datalist works from any checkout)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = dict(doc)
    if relative_to is not None:
        doc["dataset_dir"] = os.path.relpath(doc["dataset_dir"], Path(relative_to).resolve())
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out)
    return out


def load_datalist(path: str | os.PathLike, key: str = "training", dataset_dir: str | os.PathLike | None = None) -> list[dict]:
    """Read one split of a datalist with absolute paths.

    ``dataset_dir`` defaults to the one recorded in the file (resolved against the file's
    folder when relative).
    """
    path = Path(path)
    doc = json.loads(path.read_text())
    base = Path(dataset_dir) if dataset_dir is not None else Path(doc.get("dataset_dir", "."))
    if not base.is_absolute() and dataset_dir is None:
        base = path.parent / base
    return [absolute_item(item, base) for item in doc[key]]
