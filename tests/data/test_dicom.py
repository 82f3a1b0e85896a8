"""DICOM input: series written from shared NIfTI cases, converted back, compared voxel by voxel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg3d.core.cases import MODALITIES, CaseError, discover, inspect_case
from brainseg3d.data.dicom import (
    dicom_case_to_nifti,
    find_dicom_series,
    is_dicom_case,
    match_modality,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BRATS = SHARED / "brats2018" / "Brats18_2013_11_1"
TCGA = SHARED / "formats" / "TCGA-FG-6692_raw"

DESCRIPTIONS = {"t1": "AX T1 SE", "t1ce": "AX T1 POST GD", "t2": "AX T2 FSE", "flair": "AX T2 FLAIR"}
_UID_ROOT = "1.2.826.0.1.3680043.2.1125.99"
_uid_counter = iter(range(1, 10_000))


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    return path


def write_series(vol: sitk.Image, folder: Path, description: str) -> str:
    """Write a 3D volume as a DICOM MR series, one file per slice, with its geometry tags."""
    folder.mkdir(parents=True, exist_ok=True)
    n = next(_uid_counter)
    series_uid = f"{_UID_ROOT}.{n}"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d, sp = vol.GetDirection(), vol.GetSpacing()
    iop = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    for k in range(vol.GetSize()[2]):
        sl = vol[:, :, k]
        ipp = vol.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
            "0008|0018": f"{series_uid}.{k + 1}",
            "0008|0060": "MR",
            "0010|0020": "PATIENT1",
            "0020|000d": f"{_UID_ROOT}.0",
            "0020|000e": series_uid,
            "0008|103e": description,
            "0020|0032": "\\".join(f"{v:.6f}" for v in ipp),
            "0020|0037": iop,
            "0020|0013": str(k + 1),
            "0028|0030": f"{sp[1]:.6f}\\{sp[0]:.6f}",
            "0018|0050": f"{sp[2]:.6f}",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{n:03d}_{k:03d}.dcm"))
        writer.Execute(sl)
    return series_uid


@pytest.fixture(scope="module")
def source():
    """Four BraTS modalities cropped to 40 slices (int16, identity direction)."""
    return {
        m: sitk.ReadImage(str(need(BRATS) / f"Brats18_2013_11_1_{m}.nii.gz"))[:, :, 60:100]
        for m in MODALITIES
    }


@pytest.fixture(scope="module")
def layouts(source, tmp_path_factory):
    """The same case as four named folders (no SeriesDescription) and as one folder of four series."""
    root = tmp_path_factory.mktemp("dicom")
    folders = root / "case_folders"
    flat = root / "case_flat"
    for m, vol in source.items():
        write_series(vol, folders / m, "")  # empty description: the folder name tells the modality
        write_series(vol, flat, DESCRIPTIONS[m])
    return {"folders": folders, "flat": flat}


def _assert_same_image(out: sitk.Image, src: sitk.Image):
    assert out.GetSize() == src.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(src))
    np.testing.assert_allclose(out.GetOrigin(), src.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(out.GetSpacing(), src.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(out.GetDirection(), src.GetDirection(), atol=1e-6)
    far = [s - 1 for s in src.GetSize()]
    np.testing.assert_allclose(
        out.TransformIndexToPhysicalPoint(far), src.TransformIndexToPhysicalPoint(far), atol=1e-3
    )


@pytest.mark.parametrize("layout", ["folders", "flat"])
def test_dicom_round_trip(layout, layouts, source, tmp_path):
    folder = layouts[layout]
    assert is_dicom_case(folder)
    assert len(find_dicom_series(folder)) == 4
    case = dicom_case_to_nifti(folder, tmp_path, case_id="DCM1")
    assert case.case_id == "DCM1" and sorted(case.images) == sorted(MODALITIES)
    assert [c.case_id for c in discover(tmp_path)] == ["DCM1"]
    info = inspect_case(case)
    assert info.ok and info.same_grid and info.shape == (240, 240, 40)
    for m in MODALITIES:
        assert case.images[m] == tmp_path / f"DCM1_{m}.nii.gz"
        _assert_same_image(sitk.ReadImage(str(case.images[m])), source[m])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_dicom_case_id_defaults_to_folder_name(layouts, tmp_path):
    case = dicom_case_to_nifti(layouts["flat"], tmp_path)
    assert case.case_id == "case_flat"


def test_oblique_series_keeps_physical_positions(tmp_path):
    """Raw oblique TCGA scans (four grids, left-handed direction) keep every voxel's position."""
    src = {m: sitk.ReadImage(str(need(TCGA) / f"TCGA-FG-6692_{m}.nii.gz"))[:, :, 10:16] for m in MODALITIES}
    for m, vol in src.items():
        write_series(vol, tmp_path / "dcm" / m, f"series {m.upper()}")
    case = dicom_case_to_nifti(tmp_path / "dcm", tmp_path / "out", case_id="OBL")
    assert not inspect_case(case).same_grid  # four grids, as acquired
    for m in MODALITIES:
        out = sitk.ReadImage(str(case.images[m]))
        assert out.GetSize() == src[m].GetSize()
        # every output voxel centre is a source voxel centre (GDCM may reverse the slice order)
        corners = [(i, j, k) for i in (0, out.GetSize()[0] - 1) for j in (0, out.GetSize()[1] - 1)
                   for k in (0, out.GetSize()[2] - 1)]
        for c in corners:
            p = out.TransformIndexToPhysicalPoint(c)
            idx = src[m].TransformPhysicalPointToContinuousIndex(p)
            np.testing.assert_allclose(idx, np.round(idx), atol=1e-3 / 0.9)
        same = sitk.Resample(src[m], out, sitk.Transform(), sitk.sitkNearestNeighbor, -1)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(same), sitk.GetArrayFromImage(out))


@pytest.mark.parametrize(
    "description, folder, expected",
    [
        ("AX T2 FLAIR", None, "flair"),
        ("t2f", None, "flair"),
        ("AX T1 POST GD", None, "t1ce"),
        ("T1+C", None, "t1ce"),
        ("T1 MPRAGE contrast", None, "t1ce"),
        ("T1C", None, "t1ce"),
        ("AX T2 FSE", None, "t2"),
        ("SAG T1 SE", None, "t1"),
        ("", "t1ce", "t1ce"),
        ("", "FLAIR", "flair"),
        ("", "BraTS-GLI-00000-000-t2w", "t2"),
        ("", "t1n", "t1"),
        ("", "seg", None),
        ("LOCALIZER", "series3", None),
        ("DWI", None, None),
    ],
)
def test_match_modality(description, folder, expected):
    assert match_modality(description, folder) == expected


def test_missing_modality_series(source, tmp_path):
    for m in ("t1", "t1ce", "t2"):
        write_series(source[m][:, :, :3], tmp_path / "P7", DESCRIPTIONS[m])
    write_series(source["t1"][:, :, :2], tmp_path / "P7", "3-PLANE LOCALIZER")
    with pytest.raises(CaseError, match=r"^P7: no DICOM series matches modality flair .*LOCALIZER"):
        dicom_case_to_nifti(tmp_path / "P7", tmp_path / "out")


def test_two_series_match_one_modality(source, tmp_path):
    for m in MODALITIES:
        write_series(source[m][:, :, :3], tmp_path / "P8", DESCRIPTIONS[m])
    write_series(source["t2"][:, :, :3], tmp_path / "P8", "COR T2")
    with pytest.raises(CaseError, match=r"^P8: two series match modality t2: .*'AX T2 FSE'.*'COR T2'"):
        dicom_case_to_nifti(tmp_path / "P8", tmp_path / "out")


def test_no_dicom_series(tmp_path):
    (tmp_path / "P9").mkdir()
    (tmp_path / "P9" / "notes.txt").write_text("not DICOM")
    with pytest.raises(CaseError, match=r"^P9: no DICOM series found"):
        dicom_case_to_nifti(tmp_path / "P9", tmp_path / "out")


def test_is_dicom_case(layouts, tmp_path):
    assert is_dicom_case(layouts["folders"]) and is_dicom_case(layouts["flat"])
    assert not is_dicom_case(need(BRATS))  # NIfTI case folder
    assert not is_dicom_case(BRATS / "Brats18_2013_11_1_t1.nii.gz")  # a file
    assert not is_dicom_case(tmp_path)  # empty folder
    assert not is_dicom_case(tmp_path / "missing")
    mixed = tmp_path / "mixed"
    write_series(sitk.ReadImage(str(BRATS / "Brats18_2013_11_1_t1.nii.gz"))[:, :, :2], mixed / "t1", "T1")
    assert is_dicom_case(mixed)
    (mixed / "x_t1.nii.gz").write_bytes(b"")
    assert not is_dicom_case(mixed)
