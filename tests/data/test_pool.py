"""The training pool: folds over several roots, stratified by source, portable paths."""

import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainseg3d.cli import main
from brainseg3d.data.pool import case_release, case_source, fold_items, load_pool, make_pool, parse_roots, stratified_folds, write_pool
from brainseg3d.preprocessing.transforms import preprocessing

from ..conftest import BRATS2018, REPO, write_case


def _ids():
    return {f"Brats18_X_{i:02d}_1": "adult" for i in range(35)} | {f"BraTS-SSA-{i:05d}-000": "africa" for i in range(25)}


def test_folds_disjoint_stratified_deterministic_and_complete():
    ids = _ids()
    a = stratified_folds(ids, 5, seed=0)
    assert set(a) == set(ids) and set(a.values()) == set(range(5))  # every case in exactly one fold
    per = Counter((f, ids[c]) for c, f in a.items())
    assert all(per[(f, "adult")] == 7 and per[(f, "africa")] == 5 for f in range(5))  # stratified
    assert stratified_folds(dict(reversed(list(ids.items()))), 5, seed=0) == a  # order-free
    assert stratified_folds(ids, 5, seed=1) != a
    sizes = Counter(stratified_folds({f"c{i}": "adult" for i in range(7)} | {f"d{i}": "africa" for i in range(4)}, 5).values())
    assert max(sizes.values()) - min(sizes.values()) <= 1  # uneven groups still give even folds
    with pytest.raises(ValueError):
        stratified_folds({"a": "adult"}, 2)


def test_source_and_release_from_case_id():
    assert case_source("BraTS-SSA-00002-000") == "africa" and case_source("Brats18_2013_11_1") == "adult"
    assert case_source("BraTS2021_00002") == "adult"
    assert case_release("BraTS-SSA-00002-000") == "BraTS-SSA 2023" and case_release("BraTS20_Training_001") == "BraTS 2020"
    assert parse_roots(["a=/x", "b=rel/y"]) == {"a": "/x", "b": "rel/y"}
    with pytest.raises(ValueError):
        parse_roots(["nopath"])


def _africa_case(folder: Path, case_id: str):
    """A 2023-style case as BraTS-Africa ships it: float32 images and a float32 0/1/2/3 label."""
    write_case(folder, case_id, naming="2023")
    for f in folder.glob("*.nii.gz"):
        img = nib.load(str(f))
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.float32), img.affine), str(f))
    return folder


def test_pool_over_two_roots_moves_and_preprocesses(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(3):
        write_case(a / f"Brats18_T_{i}_1", f"Brats18_T_{i}_1", seed=i)
        _africa_case(b / f"BraTS-SSA-0000{i}-000", f"BraTS-SSA-0000{i}-000")
    doc = make_pool({"adult": a, "africa": b}, folds=3, seed=0)
    out = write_pool(doc, tmp_path / "lists" / "pool.json")
    saved = json.loads(out.read_text())
    assert saved["roots"] == {"adult": "../a", "africa": "../b"}  # relative to the file
    assert all(not p.startswith("/") for it in saved["training"] for p in it["image"] + [it["label"]])
    assert Counter((it["fold"], it["source"]) for it in saved["training"]) == {(f, s): 1 for f in range(3) for s in ("adult", "africa")}
    tr, va = fold_items(out, 1)
    assert len(tr) == 4 and len(va) == 2 and not ({i["case"] for i in tr} & {i["case"] for i in va})
    # move one root: the recorded path fails with the way out, an override works
    moved = tmp_path / "moved"
    b.rename(moved)
    with pytest.raises(FileNotFoundError, match="--root africa="):
        load_pool(out)
    items = load_pool(out, {"africa": moved})
    africa = next(i for i in items if i["source"] == "africa")
    assert Path(africa["image"][0]).is_file() and africa["image"][0].endswith("-t1n.nii.gz")
    # the float32 2023 label with 0/1/2/3 becomes nested regions [WT, TC, ET]
    d = preprocessing(["image", "label"])({"image": africa["image"], "label": africa["label"]})
    lab = np.asarray(nib.load(africa["label"]).dataobj)
    assert d["label"].shape[0] == 3 and int(d["label"][2].sum()) == int((lab == 3).sum()) > 0
    assert int(d["label"][0].sum()) == int((lab > 0).sum())


def test_cli_pool(tmp_path, capsys):
    for i in range(2):
        write_case(tmp_path / "r" / f"Brats18_C_{i}_1", f"Brats18_C_{i}_1", seed=i)
    out = tmp_path / "p.json"
    assert main(["pool", "--root", f"r={tmp_path / 'r'}", "--out", str(out), "--folds", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["pool", "--root", f"r={tmp_path / 'missing'}", "--out", str(out)]) == 2


def test_committed_pool_datalist(shared):
    doc = json.loads((REPO / "data_lists" / "pool60.json").read_text())
    items = doc["training"]
    assert len(items) == 60 and len({i["case"] for i in items}) == 60 and doc["folds"] == 5
    assert Counter(i["source"] for i in items) == {"adult": 35, "africa": 25}
    assert Counter(i["release"] for i in items) == {"BraTS 2018": 21, "BraTS 2021": 13, "BraTS 2020": 1, "BraTS-SSA 2023": 25}
    assert all(not r.startswith("/") for r in doc["roots"].values())
    assert stratified_folds({i["case"]: i["source"] for i in items}, 5, doc["seed"]) == {i["case"]: i["fold"] for i in items}
    # the 20 shared cases load from the shared root wherever the extra root is
    shared_items = [i for i in load_pool(REPO / "data_lists" / "pool60.json", {"extra": BRATS2018}) if i["root"] == "brats2018"]
    assert len(shared_items) == 20 and all(Path(p).is_file() for i in shared_items for p in i["image"] + [i["label"]])
