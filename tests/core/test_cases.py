import shutil

import nibabel as nib
import numpy as np
import pytest

from brainseg3d.core.cases import MODALITIES, CaseError, channel_layout, discover, inspect_case, split_name
from brainseg3d.cli import main

from ..conftest import BRATS2018, FORMATS, write_case


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Brats18_2013_11_1_t1ce.nii.gz", ("Brats18_2013_11_1", "t1ce")),
        ("BraTS2021_00006_flair.nii.gz", ("BraTS2021_00006", "flair")),
        ("BraTS-GLI-00000-000-t2W.nii.gz", ("BraTS-GLI-00000-000", "t2")),
        ("BraTS-GLI-00000-000-t1n.nii", ("BraTS-GLI-00000-000", "t1")),
        ("BraTS-GLI-00000-000-T1C.NII.GZ", ("BraTS-GLI-00000-000", "t1ce")),
        ("BraTS-MET-00110-000-t2f.nii.gz", ("BraTS-MET-00110-000", "flair")),
        ("x_seg.nii.gz", ("x", "label")),
        ("stacked.nii.gz", ("stacked", None)),
        ("notes.txt", None),
    ],
)
def test_split_name(name, expected):
    assert split_name(name) == expected


def test_discover_every_shared_case(shared):
    cases = {c.case_id: c for c in discover(shared)}
    assert len(cases) == 24
    for cid, c in cases.items():
        assert not c.problems, (cid, c.problems)
        files = c.modality_files()
        assert len(files) == 4
        # fixed order t1, t1ce, t2, flair whatever the naming
        stems = [f.name.lower() for f in files]
        assert ("t1" in stems[0]) and ("t1ce" in stems[1] or "t1c" in stems[1])
        assert ("t2" in stems[2]) and ("flair" in stems[3] or "t2f" in stems[3])
    assert cases["BraTS-GLI-00000-000"].images["t2"].name == "BraTS-GLI-00000-000-t2W.nii.gz"
    assert cases["BraTS-MET-00110-000"].label is None
    assert all(cases[c].label is not None for c in cases if c.startswith("Brats18"))
    for cid in cases:
        info = inspect_case(cases[cid])
        if cid == "TCGA-FG-6692":
            assert not info.ok and info.problem.startswith("modalities on different grids")
        else:
            assert info.ok and info.shape == (240, 240, 155) and info.same_grid, (cid, info)


def test_discover_single_case_folder_and_list_file(shared, tmp_path):
    one = discover(FORMATS / "BraTS2021_00006")
    assert [c.case_id for c in one] == ["BraTS2021_00006"]
    lst = tmp_path / "cases.txt"
    lst.write_text(f"# two cases\n{BRATS2018 / 'Brats18_2013_11_1'}\n{FORMATS / 'BraTS-GLI-00000-000'}\n")
    assert [c.case_id for c in discover(lst)] == ["BraTS-GLI-00000-000", "Brats18_2013_11_1"]


def test_missing_and_duplicate_modality(tmp_path):
    write_case(tmp_path / "a", "A", skip=("_t2",))
    write_case(tmp_path / "b", "B")
    shutil.copy(tmp_path / "b" / "B_t1.nii.gz", tmp_path / "b" / "B_T1.nii")
    cases = {c.case_id: c for c in discover(tmp_path)}
    with pytest.raises(CaseError, match="A: missing modality t2"):
        cases["A"].check()
    with pytest.raises(CaseError, match="B: two files for one modality 't1'"):
        cases["B"].modality_files()
    assert "missing modality t2" in inspect_case(cases["A"]).problem


def test_unreadable_and_not_3d(tmp_path):
    folder = write_case(tmp_path / "c", "C")
    (folder / "C_t2.nii.gz").write_bytes(b"this is not a nifti file")
    info = inspect_case(discover(folder)[0])
    assert not info.ok and "unreadable file C_t2.nii.gz" in info.problem
    folder = write_case(tmp_path / "d", "D")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5, 2), np.int16), np.eye(4)), str(folder / "D_t1.nii.gz"))
    info = inspect_case(discover(folder)[0])
    assert "D_t1.nii.gz is not a 3D volume" in info.problem


def test_4d_inputs(tmp_path):
    last = np.zeros((10, 12, 8, 4), np.float32)
    first = np.zeros((4, 10, 12, 8), np.float32)
    nib.save(nib.Nifti1Image(last, np.eye(4)), str(tmp_path / "caseL.nii.gz"))
    nib.save(nib.Nifti1Image(first, np.eye(4)), str(tmp_path / "caseF.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 8, 3), np.float32), np.eye(4)), str(tmp_path / "bad3.nii.gz"))
    cases = {c.case_id: c for c in discover(tmp_path)}
    assert channel_layout(last.shape) == "last" and channel_layout(first.shape) == "first"
    assert inspect_case(cases["caseL"]).shape == (10, 12, 8)
    assert inspect_case(cases["caseF"]).shape == (10, 12, 8)
    assert "not a 4-channel volume" in inspect_case(cases["bad3"]).problem
    assert discover(tmp_path / "caseL.nii.gz")[0].image4d.name == "caseL.nii.gz"


def test_cli_cases(shared, capsys):
    assert main(["cases", str(FORMATS)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("case\tt1\tt1ce")
    rows = {line.split("\t")[0]: line for line in out[1:]}
    assert "modalities on different grids" in rows["TCGA-FG-6692"] and "`segment` registers them" in rows["TCGA-FG-6692"]
    assert rows["BraTS-MET-00110-000"].split("\t")[5] == "none"
    assert rows["BraTS-GLI-00000-000"].split("\t")[-1] == "ok"
    assert MODALITIES == ("t1", "t1ce", "t2", "flair")


def test_cli_cases_exits_1_when_a_case_cannot_be_segmented(make_case, capsys):
    folder = make_case("Miss_001", skip=("_t2",))
    assert main(["cases", str(folder)]) == 1
    cap = capsys.readouterr()
    assert "missing modality t2" in cap.out and "1 case, 0 ok, 1 with problems" in cap.err
