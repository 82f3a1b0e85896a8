"""A training pool spread over several roots, cut into stratified patient-level folds.

The pool datalist follows MONAI Auto3DSeg's cross-validation layout: one ``training`` list
whose items carry a ``fold`` key (fold ``i`` validates on the items with ``fold == i`` and
trains on the rest). Items may come from several data roots; each item names its root
(``"root": "extra"``) and its paths are relative to that root. The file records every root
relative to its own folder, so the committed datalist works from any checkout, and a root
can be moved (``--root extra=/data/extra`` on the command line, ``roots=`` in Python)::

    {"roots": {"brats2018": "../../shared/data/brats2018", "extra": "../../pool_extra"},
     "folds": 5, "seed": 0, "stratify": "source",
     "training": [{"case": "...", "root": "extra", "source": "africa", "release": "...",
                   "fold": 3, "image": [t1, t1ce, t2, flair], "label": seg}, ...]}

Folds are deterministic (seeded, independent of discovery order), disjoint, cover every
case once, and are stratified by source (adult glioma vs BraTS-Africa): each source is
shuffled on its own and dealt round-robin, so every fold holds the same share of each.

Example:
    >>> from brainseg3d.data.pool import make_pool, fold_items
    >>> doc = make_pool({"brats2018": "../shared/data/brats2018", "extra": "/data/extra"})
    >>> train, val = fold_items("data_lists/pool60.json", fold=0)
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

from brainseg3d.core.cases import discover
from brainseg3d.core.training import fold_items, load_pool  # the one definition (the bundle's train.json reads pools too)

__all__ = ["SOURCES", "case_source", "case_release", "stratified_folds", "make_pool", "write_pool",
           "load_pool", "fold_items", "parse_roots"]

#: the sources folds are stratified by (and CV scores are reported per)
SOURCES: tuple[str, ...] = ("adult", "africa")


def case_source(case_id: str) -> str:
    """``africa`` for BraTS-Africa (BraTS-SSA) cases, ``adult`` for adult glioma (BraTS 2018-2023 GLI)."""
    return "africa" if re.match(r"(?i)brats-ssa", case_id) else "adult"


def case_release(case_id: str) -> str:
    """The BraTS release a case id comes from (``BraTS 2018`` ... ``BraTS-SSA 2023``)."""
    rules = [(r"(?i)^brats-ssa", "BraTS-SSA 2023"), (r"(?i)^brats-gli", "BraTS-GLI 2023"),
             (r"(?i)^brats2021_", "BraTS 2021"), (r"(?i)^brats20_", "BraTS 2020"),
             (r"(?i)^brats19_", "BraTS 2019"), (r"(?i)^brats18_", "BraTS 2018")]
    return next((name for pat, name in rules if re.match(pat, case_id)), "unknown")


def stratified_folds(cases: Mapping[str, str], folds: int = 5, seed: int = 0) -> dict[str, int]:
    """Assign each case to a fold, stratified by its group.

    Args:
        cases: case id -> group (e.g. source).
        folds: number of folds (at least 2, at most the number of cases).
        seed: shuffling seed; the result does not depend on the order of ``cases``.

    Returns:
        case id -> fold index in ``range(folds)``.
    """
    if folds < 2 or folds > len(cases):
        raise ValueError(f"folds must be between 2 and the number of cases ({len(cases)}), got {folds}")
    by_group: dict[str, list[str]] = defaultdict(list)
    for cid, group in cases.items():
        by_group[group].append(cid)
    out: dict[str, int] = {}
    offset = 0
    for group in sorted(by_group):
        ids = sorted(by_group[group])
        random.Random(f"{seed}:{group}").shuffle(ids)
        for i, cid in enumerate(ids):
            out[cid] = (offset + i) % folds
        offset += len(ids)  # the next group starts where this one stopped: fold sizes stay even
    return out


def make_pool(roots: Mapping[str, str | os.PathLike], folds: int = 5, seed: int = 0) -> dict:
    """Discover every case under each root and build the pool datalist (absolute roots).

    Raises:
        CaseError: a case has a structural problem, or two roots hold the same case id.
    """
    items: list[dict] = []
    seen: dict[str, str] = {}
    for name, root in roots.items():
        base = Path(root).resolve()
        for case in discover(base):
            case.check()
            if case.label is None:
                raise ValueError(f"{case.case_id}: no label (a training pool needs labelled cases)")
            if case.case_id in seen:
                raise ValueError(f"{case.case_id}: in both roots {seen[case.case_id]!r} and {name!r}")
            seen[case.case_id] = name
            item = case.to_datalist_item(base)
            items.append({"case": item["case"], "root": name, "source": case_source(case.case_id),
                          "release": case_release(case.case_id), "image": item["image"], "label": item["label"]})
    assignment = stratified_folds({it["case"]: it["source"] for it in items}, folds, seed)
    for it in items:
        it["fold"] = assignment[it["case"]]
    items.sort(key=lambda it: it["case"])
    return {
        "description": "brainseg3d training pool: patient-level folds stratified by source (adult / africa)",
        "roots": {name: str(Path(r).resolve()) for name, r in roots.items()},
        "folds": folds,
        "seed": seed,
        "stratify": "source",
        "training": items,
    }


def write_pool(doc: dict, out: str | os.PathLike) -> Path:
    """Write the pool datalist with every root stored relative to the file's folder."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = dict(doc)
    doc["roots"] = {n: os.path.relpath(r, out.parent.resolve()) for n, r in doc["roots"].items()}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out)
    return out


def parse_roots(specs: Sequence[str] | None) -> dict[str, str]:
    """``["extra=/data/extra", ...]`` -> ``{"extra": "/data/extra"}`` (command-line ``--root``)."""
    out: dict[str, str] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--root takes NAME=PATH, got {spec!r}")
        out[name] = path
    return out
