"""Optional check: the bundle served by MONAI Label's bundle infer task.

Not a pytest module (pytest collects ``test_*.py`` only): MONAI Label 0.8.5 pins numpy 1.26, so
it lives in its own virtual environment, made by ``.ci/monailabel_check.sh``, which runs this
file with that environment's Python::

    bash .ci/monailabel_check.sh                    # make the venv if needed, then run this
    /path/to/venv/bin/python tests/monailabel_infer_check.py [--case DIR] [--bundle DIR]

What it does, as a MONAI Label server would (``monailabel.tasks.infer.bundle.BundleInferTask``,
the task the ``monaibundle`` sample app builds for every bundle):

1. loads the bundle (``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``);
2. checks the task's label names (``task.labels`` and ``task.info()``) against the first output's
   ``channel_def`` of the metadata (background left out, as MONAI Label does);
3. sends one request with one image path: the four modalities of a shared BraTS case stacked
   into a single 4D channel-last NIfTI (t1, t1ce, t2, flair), as a MONAI Label client uploads;
4. checks the written label: uint8 (never int64, which ITK-based viewers cannot read), the
   input's grid (shape and affine), values within the ``channel_def`` keys, some tumour found;
5. compares it voxel for voxel with ``python -m monai.bundle run`` of the same bundle on the
   same case (in this environment), unless ``--no-compare``.

Exit status 0 when every check passes, 1 when one fails. When MONAI Label cannot be imported the
script prints ``SKIPPED: <reason>`` and exits 0.

About torchvision: ``monailabel.transform.post`` imports ``torchvision.utils`` (``make_grid``,
``save_image``, used only for DeepEdit / TensorBoard image grids) at module level. PyPI's Linux
torchvision wheels are CUDA builds whose ``_C.so`` needs ``libc10_cuda.so``, which the CPU torch
wheel lacks, so ``import torchvision`` fails ("operator torchvision::nms does not exist"). When the
installed torchvision cannot be imported (tried in a child process), a small stand-in module
providing ``torchvision.utils`` is registered before MONAI Label is imported; its functions raise
if they are ever called. Nothing in bundle inference calls them. The versions printed say which
one was used.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "brats_mri_2p5d_segmentation"
SHARED = REPO.parent / "shared" / "data"
DEFAULT_CASE = SHARED / "brats2018" / "Brats18_CBICA_AME_1"
MODALITIES = ("t1", "t1ce", "t2", "flair")


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def ensure_torchvision() -> str:
    """Import torchvision, or register the stand-in described in the module docstring."""
    probe = subprocess.run([sys.executable, "-c", "import torchvision.utils"], capture_output=True, text=True, encoding="utf-8", errors="replace")
    if probe.returncode == 0:
        return f"torchvision {version('torchvision')}"
    lines = [ln for ln in probe.stderr.strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else f"exit status {probe.returncode}"

    def unavailable(*args, **kwargs):
        raise RuntimeError(f"torchvision is not usable in this environment ({reason})")

    tv = types.ModuleType("torchvision")
    tv.__path__ = []  # a package, so that "import torchvision.utils" works
    tv.__version__ = "0+stand-in"
    utils = types.ModuleType("torchvision.utils")
    utils.make_grid = utils.save_image = unavailable
    tv.utils = utils
    sys.modules["torchvision"], sys.modules["torchvision.utils"] = tv, utils
    return f"stand-in torchvision.utils (installed torchvision {version('torchvision')} cannot be imported: {reason})"


def stack_case(case_dir: Path, out: Path) -> Path:
    """The four modalities of a BraTS 2018 case as one (X, Y, Z, 4) NIfTI, t1 header and affine."""
    import nibabel as nib
    import numpy as np

    case_id = case_dir.name
    imgs = [nib.load(str(case_dir / f"{case_id}_{m}.nii.gz")) for m in MODALITIES]
    data = np.stack([np.asarray(i.dataobj) for i in imgs], axis=-1)
    path = out / f"{case_id}_4d.nii.gz"
    nib.save(nib.Nifti1Image(data, imgs[0].affine, imgs[0].header), str(path))
    return path


def bundle_run_reference(bundle: Path, case_dir: Path, work: Path) -> Path:
    """``python -m monai.bundle run`` of the bundle's inference.json on the case, in this venv."""
    inputs = work / "cases" / case_dir.name
    inputs.mkdir(parents=True)
    for m in MODALITIES:
        (inputs / f"{case_dir.name}_{m}.nii.gz").symlink_to(case_dir / f"{case_dir.name}_{m}.nii.gz")
    out = work / "bundle_run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json")]
    cmd += ["--bundle_root", str(bundle), "--dataset_dir", str(work / "cases"), "--output_dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", cwd=work)
    if proc.returncode != 0:
        raise RuntimeError(f"monai.bundle run failed:\n{proc.stderr[-3000:]}")
    return out / f"{case_dir.name}.nii.gz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=BUNDLE)
    ap.add_argument("--case", type=Path, default=DEFAULT_CASE, help="a BraTS 2018 case folder (four modality files)")
    ap.add_argument("--no-compare", action="store_true", help="skip the comparison with `monai.bundle run`")
    args = ap.parse_args(argv)

    tv = ensure_torchvision()
    try:
        from monailabel.tasks.infer.bundle import BundleInferTask
    except Exception as e:  # not installed, or broken beyond the torchvision stand-in
        print(f"SKIPPED: cannot import monailabel.tasks.infer.bundle ({type(e).__name__}: {e})")
        return 0
    import nibabel as nib
    import numpy as np

    print("versions:")
    print(f"  python {platform.python_version()}")
    for pkg in ("monailabel", "monai", "torch", "numpy", "nibabel", "pytorch-ignite", "itk"):
        print(f"  {pkg} {version(pkg)}")
    print(f"  torchvision: {tv}")

    if not (args.case / f"{args.case.name}_t1.nii.gz").is_file():
        print(f"SKIPPED: shared case not found at {args.case}")
        return 0

    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            failures.append(what)

    meta = json.loads((args.bundle / "configs" / "metadata.json").read_text())
    channel_def = next(iter(meta["network_data_format"]["outputs"].values()))["channel_def"]
    expected_labels = {name.lower(): int(k) for k, name in channel_def.items() if name.lower() != "background"}

    with tempfile.TemporaryDirectory(prefix="monailabel_check_") as tmp:
        work = Path(tmp)
        image4d = stack_case(args.case, work)
        ref = nib.load(str(args.case / f"{args.case.name}_t1.nii.gz"))

        print(f"bundle: {args.bundle}")
        t0 = time.perf_counter()
        task = BundleInferTask(str(args.bundle), {})
        check(task.is_valid(), "BundleInferTask accepts the bundle (is_valid)")
        if not task.is_valid():
            print("FAILED: the bundle was not loaded (see MONAI Label's log above)")
            return 1
        info = task.info()
        print(f"  labels: {task.labels}; version {info.get('version')}; dimension {info.get('dimension')}")
        check(task.labels == expected_labels, f"task.labels == metadata channel_def without background {expected_labels}")
        check(info.get("labels") == expected_labels, "task.info()['labels'] == metadata channel_def")
        check(info.get("version") == meta["version"], f"task.info()['version'] == {meta['version']}")
        check(info.get("dimension") == 3, "task.info()['dimension'] == 3")

        print(f"request: one image path, 4D channel-last NIfTI {image4d.name} {nib.load(str(image4d)).shape}")
        label_path, result = task({"image": str(image4d), "device": "cpu"})
        seconds = time.perf_counter() - t0
        print(f"  result file {label_path} ({seconds:.1f} s with loading); latencies {result.get('latencies', {}).get('total')} s")
        check(isinstance(label_path, str) and Path(label_path).is_file(), "a label file is written")
        if failures:
            print(f"FAILED: {len(failures)} check(s)")
            return 1
        out = nib.load(label_path)
        arr = np.asarray(out.dataobj)
        dtype = out.get_data_dtype()
        print(f"  label: shape {out.shape}, dtype {dtype}, values {np.unique(arr).tolist()}")
        check(dtype == np.uint8, f"label dtype is uint8 (got {dtype}; int64 is what viewers cannot read)")
        check(tuple(out.shape) == tuple(ref.shape[:3]), f"label shape == input grid {tuple(ref.shape[:3])}")
        check(bool(np.allclose(out.affine, ref.affine, atol=1e-4)), "label affine == input affine")
        values = set(np.unique(arr).astype(int).tolist())
        keys = {int(k) for k in channel_def}
        check(values <= keys, f"label values {sorted(values)} within channel_def keys {sorted(keys)}")
        check(len(values) > 1, "some tumour is segmented")
        check(result.get("label_names") == expected_labels, "result['label_names'] == channel_def labels")

        if not args.no_compare:
            print("reference: python -m monai.bundle run on the case's four files")
            reference = nib.load(str(bundle_run_reference(args.bundle, args.case, work)))
            same = np.array_equal(np.asarray(reference.dataobj), arr)
            diff = int((np.asarray(reference.dataobj) != arr).sum()) if reference.shape == arr.shape else -1
            check(same, f"MONAI Label mask == monai.bundle run mask (voxels differing: {diff})")
        Path(label_path).unlink(missing_ok=True)  # MONAI Label writes results to temporary files

    if failures:
        print(f"FAILED: {len(failures)} check(s): " + "; ".join(failures))
        return 1
    print("PASSED: the bundle works in MONAI Label's BundleInferTask")
    return 0


if __name__ == "__main__":
    sys.exit(main())
