"""Registration of unregistered modalities onto one grid, and the mask's way back (real data)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from brainseg3d.core.cases import Case, CaseError, discover, inspect_case
from brainseg3d.preprocessing.registration import (
    choose_reference,
    looks_skull_stripped,
    mean_displacement_mm,
    needs_registration,
    register_case,
    resample_to_reference,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TCGA = SHARED / "formats" / "TCGA-FG-6692_raw"
BRATS = SHARED / "brats2018" / "Brats18_2013_11_1"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    return path


@pytest.fixture(scope="module")
def tcga(tmp_path_factory):
    """The raw TCGA case (four grids) registered once for all the tests below."""
    case = discover(need(TCGA))[0]
    workdir = tmp_path_factory.mktemp("tcga_reg")
    messages: list[str] = []
    return case, register_case(case, workdir, progress=messages.append), workdir, messages


def test_tcga_needs_registration_and_brats_does_not():
    assert needs_registration(discover(need(TCGA))[0])
    assert not needs_registration(discover(need(BRATS))[0])


@pytest.mark.slow
def test_tcga_registered_onto_one_grid(tcga):
    case, reg, workdir, messages = tcga
    assert not inspect_case(case).same_grid  # the premise: raw modalities on four grids
    info = inspect_case(reg.case)
    assert info.ok and info.same_grid, info.problem
    assert np.allclose(info.spacing, 1.0, atol=1e-4)
    assert reg.reference == "t1ce" and reg.reference_path == case.images["t1ce"]
    found = discover(workdir)
    assert [c.case_id for c in found] == [case.case_id] and not found[0].problems
    assert found[0].images == reg.case.images
    # the grid covers the reference's physical extent (230 x 201.3 x 143 mm)
    ref = sitk.ReadImage(str(case.images["t1ce"]))
    extent = np.array(ref.GetSize()) * np.array(ref.GetSpacing())
    assert np.all(np.array(info.shape) >= extent - 1e-3) and np.all(np.array(info.shape) < extent + 1)
    json.dumps(reg.report)  # JSON-serialisable
    assert len(messages) >= 3 and any("flair" in m for m in messages)


def test_tcga_registration_improves_similarity(tcga):
    case, reg, _, _ = tcga
    per_modality = reg.report["modalities"]
    moved = [m for m, r in per_modality.items() if not r.get("reference") and not r["same_grid_as_reference"]]
    assert sorted(moved) == ["flair", "t2"]
    for m in moved:
        assert reg.mi_after[m] > reg.mi_before[m] + 0.05, (m, reg.mi_before[m], reg.mi_after[m])
        assert per_modality[m]["accepted"]
    for m in reg.mi_before:  # never worse than the header alignment
        assert reg.mi_after[m] >= reg.mi_before[m]
    assert set(reg.transforms) == {"t1", "t1ce", "t2", "flair"}
    assert reg.transforms["t1ce"].GetParameters() == (0.0,) * 6


def test_resample_mask_to_reference_grid(tcga, tmp_path):
    case, reg, _, _ = tcga
    t1ce_1mm = sitk.ReadImage(str(reg.case.images["t1ce"]))
    mask = sitk.Cast(t1ce_1mm > 300, sitk.sitkUInt8) * 2
    mask_path = tmp_path / "mask_1mm.nii.gz"
    sitk.WriteImage(mask, str(mask_path))
    ref = nib.load(str(reg.reference_path))
    for source, name in [(mask_path, "from_path.nii.gz"), (mask, "from_image.nii.gz")]:
        out = resample_to_reference(source, reg.reference_path, tmp_path / name)
        img = nib.load(str(out))
        assert img.shape == ref.shape
        assert np.allclose(img.affine, ref.affine, atol=1e-4)
        assert img.get_data_dtype() == np.uint8
        data = np.asarray(img.dataobj)
        assert set(np.unique(data)) == {0, 2}
        # the mask lands on the same anatomy: threshold the reference directly and compare
        agree = ((np.asarray(ref.dataobj) > 300) == (data > 0)).mean()
        assert agree > 0.9, agree
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["from_image.nii.gz", "from_path.nii.gz", "mask_1mm.nii.gz"]  # no temporary files left


def _downsample(img: sitk.Image, spacing: float) -> sitk.Image:
    size = [int(round(s * sp / spacing)) for s, sp in zip(img.GetSize(), img.GetSpacing())]
    return sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), [spacing] * 3,
                         img.GetDirection(), 0.0, sitk.sitkFloat32)


def test_known_rigid_transform_is_recovered(tmp_path):
    """Move three modalities of a BraTS case (2 mm) by known rigid transforms; registration undoes them."""
    src = need(BRATS)
    indir = tmp_path / "in"
    indir.mkdir()
    known = {}
    for axis, m in enumerate(["t1", "t1ce", "t2", "flair"]):
        img = _downsample(sitk.ReadImage(str(src / f"Brats18_2013_11_1_{m}.nii.gz")), 2.0)
        if m != "t1ce":
            t = sitk.Euler3DTransform()
            t.SetCenter(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()]))
            angles = [0.0, 0.0, 0.0]
            angles[axis % 3] = math.radians(5.0)
            t.SetRotation(*angles)
            t.SetTranslation((3.0, -2.0 + axis, 4.0))
            known[m] = t
            img = sitk.Resample(img, img, t, sitk.sitkLinear, 0.0)  # moved(x) = original(t(x))
        sitk.WriteImage(img, str(indir / f"K_{m}.nii.gz"))
    case = discover(indir)[0]
    reg = register_case(case, tmp_path / "out", spacing=2.0)
    assert reg.reference == "t1ce" and inspect_case(reg.case).same_grid
    fixed = sitk.ReadImage(str(indir / "K_t1ce.nii.gz"))
    brain = np.argwhere(sitk.GetArrayFromImage(fixed) > 0)[::50, ::-1]  # (x, y, z) indices
    points = np.array([fixed.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in brain])
    for m, t_true in known.items():
        # the registration maps reference points to moving points: t_true o t_found = identity
        residual = sitk.CompositeTransform([t_true, reg.transforms[m]])
        err_mm = mean_displacement_mm(residual, points)
        r = np.array(t_true.GetMatrix()).reshape(3, 3) @ np.array(reg.transforms[m].GetMatrix()).reshape(3, 3)
        err_deg = math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
        assert err_mm < 1.0 and err_deg < 1.0, (m, err_mm, err_deg)
        assert mean_displacement_mm(t_true, points) > 4.0  # the perturbation was not trivial
        assert reg.mi_after[m] > reg.mi_before[m]


def test_looks_skull_stripped():
    raw, reason = looks_skull_stripped(need(TCGA) / "TCGA-FG-6692_t1ce.nii.gz")
    assert raw is False and "skull" in reason
    stripped, reason = looks_skull_stripped(need(BRATS) / "Brats18_2013_11_1_t1ce.nii.gz")
    assert stripped is True, reason
    img = sitk.ReadImage(str(BRATS / "Brats18_2013_11_1_flair.nii.gz"))
    assert looks_skull_stripped(img)[0] is True


def test_unreadable_modality_is_a_case_error(tmp_path):
    src = need(TCGA)
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "TCGA-FG-6692_t1ce.nii.gz").write_bytes(b"this is not a NIfTI file")
    case = discover(tmp_path)[0]
    assert choose_reference(case) == "flair"  # t1ce unreadable: fall back
    with pytest.raises(CaseError, match=r"TCGA-FG-6692: cannot read t1ce"):
        register_case(case, tmp_path / "out")
    with pytest.raises(CaseError, match="unknown reference modality"):
        register_case(case, tmp_path / "out", reference="t2w")
    with pytest.raises(CaseError, match="4D"):
        register_case(Case("x", image4d=tmp_path / "x.nii.gz"), tmp_path / "out")
