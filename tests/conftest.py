"""Shared fixtures: the real data in ../shared/data and small volumes made on the fly."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
BRATS2018 = SHARED / "brats2018"
FORMATS = SHARED / "formats"
SAMPLE = REPO / "sample_data" / "Brats18_2013_20_1"


def pytest_addoption(parser):
    parser.addoption("--integration", action="store_true",
                     help="also run the integration tier (tests marked slow): what CI and the README's test command run")


def pytest_collection_modifyitems(config, items):
    """``pytest`` alone runs the fast tier; ``--integration`` adds the tests marked ``slow``. An
    explicit ``-m`` (e.g. ``-m slow``) selects as it says."""
    if config.getoption("--integration") or config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def need_shared():
    if not BRATS2018.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")


@pytest.fixture(scope="session")
def shared():
    need_shared()
    return SHARED


@pytest.fixture(scope="session")
def brats_case(shared):
    """A BraTS 2018 case folder (validation split, with label)."""
    return BRATS2018 / "Brats18_CBICA_AME_1"


def write_case(folder: Path, case_id: str, shape=(24, 28, 20), affine=None, naming="2018", seed=0, label=True, skip=()):
    """Write a small synthetic case: a 'brain' ellipsoid with a two-part 'tumour'."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    brain = (zz**2 + yy**2 + xx**2) < 0.8
    names = {"2018": ["_t1", "_t1ce", "_t2", "_flair", "_seg"], "2023": ["-t1n", "-t1c", "-t2w", "-t2f", "-seg"]}[naming]
    for i, suffix in enumerate(names[:4]):
        if suffix in skip:
            continue
        data = (brain * (100 + 20 * i + rng.normal(0, 5, shape))).astype(np.int16)
        nib.save(nib.Nifti1Image(data, affine), str(folder / f"{case_id}{suffix}.nii.gz"))
    if label:
        lab = np.zeros(shape, np.uint8)
        lab[((zz - 0.2) ** 2 + yy**2 + xx**2) < 0.15] = 2
        lab[((zz - 0.2) ** 2 + yy**2 + xx**2) < 0.05] = 1
        lab[((zz - 0.2) ** 2 + yy**2 + xx**2) < 0.02] = 4 if naming == "2018" else 3
        nib.save(nib.Nifti1Image(lab, affine), str(folder / f"{case_id}{names[4]}.nii.gz"))
    return folder


@pytest.fixture
def make_case(tmp_path):
    def make(case_id="Synth_001", **kw):
        return write_case(tmp_path / case_id, case_id, **kw)

    return make


def copy_sample(dst_root: Path, case_id: str) -> Path:
    """Copy the shipped sample case to ``dst_root/case_id`` under a new case id."""
    dst = dst_root / case_id
    dst.mkdir(parents=True)
    for f in SAMPLE.glob("*.nii.gz"):
        shutil.copy(f, dst / f.name.replace(SAMPLE.name, case_id))
    return dst
