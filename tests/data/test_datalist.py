import json
from pathlib import Path

import pytest

from brainseg3d.cli import main
from brainseg3d.data.datalist import load_datalist, make_datalist, split_cases

from ..conftest import BRATS2018, REPO


def test_split_deterministic_disjoint_and_complete():
    ids = [f"P{i:03d}" for i in range(20)]
    a = split_cases(ids, (70, 15, 15), seed=3)
    b = split_cases(list(reversed(ids)), (70, 15, 15), seed=3)
    assert a == b
    assert split_cases(ids, (70, 15, 15), seed=4) != a
    parts = [set(a[k]) for k in ("training", "validation", "testing")]
    assert sum(map(len, parts)) == 20 and set().union(*parts) == set(ids)
    assert all(not (x & y) for i, x in enumerate(parts) for y in parts[i + 1 :])
    assert [len(p) for p in parts] == [14, 3, 3]
    with pytest.raises(ValueError):
        split_cases(["a", "a", "b"])


def test_make_datalist_and_folds(shared, tmp_path):
    doc = make_datalist(BRATS2018, seed=0)
    items = doc["training"] + doc["validation"] + doc["testing"]
    assert len(items) == 20 and len({i["case"] for i in items}) == 20
    assert all(not p.startswith("/") for i in items for p in i["image"] + [i["label"]])
    assert items[0]["image"][0].endswith("_t1.nii.gz") and items[0]["image"][3].endswith("_flair.nii.gz")
    folds = make_datalist(BRATS2018, seed=0, folds=4)
    assert len(folds) == 4
    vals = [set(i["case"] for i in f["validation"]) for f in folds]
    assert sum(map(len, vals)) == 17 and len(set().union(*vals)) == 17
    for f in folds:
        tr = {i["case"] for i in f["training"]}
        te = {i["case"] for i in f["testing"]}
        assert not (tr & {i["case"] for i in f["validation"]}) and not (tr & te)


def test_cli_datalist_is_portable(shared, tmp_path, capsys):
    out = tmp_path / "lists" / "b.json"
    assert main(["datalist", str(BRATS2018), "--out", str(out), "--seed", "0"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    doc = json.loads(out.read_text())
    assert not doc["dataset_dir"].startswith("/")
    items = load_datalist(out, "validation")
    assert len(items) == 3 and all(Path(p).is_file() for i in items for p in i["image"] + [i["label"]])


def test_committed_datalist_loads(shared):
    path = REPO / "data_lists" / "brats2018.json"
    doc = json.loads(path.read_text())
    assert doc == {**make_datalist(BRATS2018, seed=0), "dataset_dir": doc["dataset_dir"]}
    for key in ("training", "validation", "testing"):
        for item in load_datalist(path, key):
            assert all(Path(p).is_file() for p in item["image"] + [item["label"]])
