"""NRRD and MetaImage inputs (the formats 3D Slicer and ITK-SNAP save): read through ITK,
segmented as their NIfTI twins are, and masks written back in the input's format on its
exact ITK grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from brainseg3d.core.cases import Case, discover, is_nifti, load_image, nifti_copy
from brainseg3d.io import mask_format_for, save_label_like

from ..conftest import SAMPLE


def _oblique(img: sitk.Image) -> sitk.Image:
    """A copy with a rotated, anisotropic LPS geometry (what a scanner export looks like)."""
    out = sitk.Image(img)
    out.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    out.SetOrigin((10.0, -20.0, 30.0))
    out.SetSpacing((1.0, 1.2, 2.0))
    return out


def test_load_image_gives_the_itk_grid_in_ras(tmp_path):
    flair = _oblique(sitk.ReadImage(str(next(SAMPLE.glob("*_flair.nii.gz")))))
    sitk.WriteImage(flair, str(tmp_path / "c_flair.nrrd"))
    sitk.WriteImage(flair, str(tmp_path / "c_flair.mha"))
    sitk.WriteImage(sitk.Compose([flair] * 4), str(tmp_path / "c4.nrrd"))  # a 4-component NRRD: the SimpleITK path
    arr = sitk.GetArrayFromImage(flair)  # (z, y, x)
    for name in ("c_flair.nrrd", "c_flair.mha"):
        img = load_image(tmp_path / name)
        assert img.shape == arr.shape[::-1]
        i, j, k = 5, 7, 9
        lps = flair.TransformIndexToPhysicalPoint((i, j, k))
        assert np.allclose(img.affine @ [i, j, k, 1], [-lps[0], -lps[1], lps[2], 1])  # LPS -> RAS
        assert np.asarray(img.dataobj)[i, j, k] == arr[k, j, i]
    four = load_image(tmp_path / "c4.nrrd")
    assert four.shape == arr.shape[::-1] + (4,) and np.allclose(four.affine, load_image(tmp_path / "c_flair.nrrd").affine)
    assert is_nifti("x.NII.GZ") and not is_nifti("x.nrrd")


def _as_itk_case(folder, oblique: bool):
    """The sample case as NRRD files (T2 as MetaImage), same voxels; ``oblique``: a rotated,
    anisotropic geometry."""
    folder.mkdir(parents=True)
    for f in sorted(SAMPLE.glob("*.nii.gz")):
        stem = f.name[: -len(".nii.gz")]
        img = sitk.ReadImage(str(f))
        sitk.WriteImage(_oblique(img) if oblique else img, str(folder / f"{stem}{'.mha' if stem.endswith('_t2') else '.nrrd'}"))
    return discover(folder)[0]


@pytest.mark.parametrize("oblique", [False, True])
def test_nrrd_case_is_discovered_converted_and_its_mask_written_on_its_grid(tmp_path, oblique):
    from brainseg3d.inference.batch import segment_cases
    from brainseg3d.inference.predictor import Predictor

    case = _as_itk_case(tmp_path / "in" / "Brats18_2013_20_1", oblique)
    assert case.case_id == "Brats18_2013_20_1" and case.images["t2"].suffix == ".mha" and case.label.suffix == ".nrrd"
    copy = nifti_copy(case, tmp_path / "nifti")
    assert all(is_nifti(p) for p in copy.modality_files()) and is_nifti(copy.label)
    assert np.array_equal(np.asarray(nib.load(str(copy.images["flair"])).dataobj), np.asarray(load_image(case.images["flair"]).dataobj))

    predictor = Predictor(precision="fp32", quality=False, views="axial")
    res = segment_cases([case], tmp_path / "out", predictor, progress=False, output_format="input")
    assert res[0].status == "ok", res[0].error
    mask = sitk.ReadImage(str(tmp_path / "out" / "Brats18_2013_20_1.nrrd"))
    ref = sitk.ReadImage(str(case.images["t1"]))
    assert mask.GetSize() == ref.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
    assert np.allclose(mask.GetOrigin(), ref.GetOrigin()) and np.allclose(mask.GetDirection(), ref.GetDirection())
    assert np.allclose(mask.GetSpacing(), ref.GetSpacing())
    nii = nib.load(str(tmp_path / "out" / "Brats18_2013_20_1.nii.gz"))
    assert np.array_equal(np.transpose(sitk.GetArrayFromImage(mask), (2, 1, 0)), np.asarray(nii.dataobj))
    assert np.asarray(nii.dataobj).any()
    assert not list((tmp_path / "out").glob(".*"))  # no work folder or geometry file left
    if not oblique:  # the same voxels as the NIfTI case: the format changes nothing
        ref_mask = predictor.segment_case(discover(SAMPLE)[0]).label
        assert np.array_equal(np.asarray(nii.dataobj), np.asarray(ref_mask.dataobj))


def test_mask_not_on_the_grid_is_never_written(tmp_path):
    flair = sitk.ReadImage(str(next(SAMPLE.glob("*_flair.nii.gz"))))
    sitk.WriteImage(flair, str(tmp_path / "f.nrrd"))
    wrong = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    with pytest.raises(ValueError, match="not on the grid"):
        save_label_like(wrong, tmp_path / "m.nrrd", tmp_path / "f.nrrd")
    assert not (tmp_path / "m.nrrd").exists()
    assert mask_format_for("a.NHDR") == "nrrd" and mask_format_for("a.mhd") == "mha" and mask_format_for("a.nii.gz") is None


def test_mask_of_a_nifti_input_keeps_its_affine_in_nrrd(tmp_path):
    affine = np.array([[-0.9, 0, 0, 80], [0, 0, 1.1, -60], [0, 1.2, 0, 40], [0, 0, 0, 1]])
    lab = np.zeros((5, 6, 7), np.uint8)
    lab[1, 2, 3] = 4
    save_label_like(nib.Nifti1Image(lab, affine), tmp_path / "m.nrrd")
    back = load_image(tmp_path / "m.nrrd")
    assert np.allclose(back.affine, affine, atol=1e-5) and np.array_equal(np.asarray(back.dataobj), lab)


def test_unreadable_nrrd_is_a_case_error(tmp_path):
    from brainseg3d.core.cases import CaseError

    bad = tmp_path / "c_flair.nrrd"
    bad.write_text("NRRD0004\nnot really\n")
    with pytest.raises(CaseError, match="unreadable file c_flair.nrrd"):
        nifti_copy(Case("c", images={"flair": bad}), tmp_path / "n")
