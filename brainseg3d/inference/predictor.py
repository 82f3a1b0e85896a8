"""The predictor used by the CLI, the Python API, the app and the benchmark.

One path for a case::

    Case -> preprocessing (transforms.preprocessing: load, RAS, 1 mm, crop brain, z-score)
         -> network (SliceWise25D over the cropped volume, slices batched; optional flip TTA)
         -> sigmoid > per-region thresholds -> nested regions [WT, TC, ET] -> BraTS label map (uint8)
         -> optional small-component clean-up
         -> Invertd (uncrop, undo RAS) -> NIfTI on the input's exact grid (shape + affine)

The network definition, K and the label scheme come from the bundle's ``inference.json``, so
the CLI and ``python -m monai.bundle run`` build the same network from one config.

Example:
    >>> from brainseg3d.inference.predictor import Predictor
    >>> predictor = Predictor()                      # the shipped bundle
    >>> result = predictor.segment_case(case)       # -> Prediction(label=Nifti1Image, report=dict)
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity

from brainseg3d.core.cases import MODALITIES, Case, CaseError, channel_layout
from brainseg3d.core.checks import check_affine, check_handedness, check_network_size, with_input_checks
from brainseg3d.io import clean_stale
from brainseg3d.networks import bf16_supported, flip_mean_probability, member_network
from brainseg3d.inference.export import Prediction, finish_case, to_input_grid
from brainseg3d.inference.prepare import LoadedCase, _case_error, _root_cause, prepare_case
from brainseg3d.inference.report import add_warnings
from brainseg3d.inference.quality import candidate_box, ensemble_features, load_calibration, member_agreement, quality_block
from brainseg3d.inference.postprocessing import PostprocessRegions
from brainseg3d.core.labels import LABEL_SCHEMES, as_views
from brainseg3d.preprocessing.transforms import RegionsToLabels, preprocessing

__all__ = ["DEFAULT_BUNDLE", "Prediction", "Predictor", "load_bundle_network"]

logger = logging.getLogger(__name__)

#: the shipped bundle (in a source tree: bundles/ at the top; in an installed wheel: package data)
DEFAULT_BUNDLE = (Path(__file__).resolve().parents[1] / "_data" / "bundles" / "brats_mri_2p5d_segmentation").resolve()


def load_bundle_network(bundle: str | os.PathLike, device: torch.device | str = "cpu", weights: bool = True,
                        members: int | None = None, views: str | list[str] | None = None):
    """Build the bundle's ``network_def`` and load ``models/model.pt``.

    Args:
        bundle: the bundle folder.
        device: where the network goes.
        weights: load ``models/model.pt`` (``False``: random weights).
        members: for an ensemble bundle (``members`` in its inference config), use only the
            first N members (fewer is faster; 1 is the single-model option).
        views: the slice views the network reads (``"axial"``, ``"coronal"``, ``"sagittal"``
            or a list), over the bundle's ``views`` (fewer is faster).

    Returns:
        ``(network, parser)``: the network in eval mode and the bundle's inference config.
    """
    bundle = Path(bundle).resolve()
    cfg = bundle / "configs" / "inference.json"
    if not cfg.exists():
        raise FileNotFoundError(f"not a bundle (no configs/inference.json): {bundle}")
    # the bundle's scripts/ package, as monai.bundle does; every bundle has its own "scripts", so
    # forget any other bundle's before importing this one's
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]
    sys.path.insert(0, str(bundle))
    try:
        parser = ConfigParser()
        parser.read_config(str(cfg))
        parser["bundle_root"] = str(bundle)
        total = parser.get("members")
        if members is not None:
            if total is None:
                if int(members) != 1:
                    raise ValueError(f"{bundle.name} holds a single model; members must be 1, got {members}")
            elif not 1 <= int(members) <= int(total):
                raise ValueError(f"{bundle.name} holds {total} ensemble members; members must be 1..{total}, got {members}")
            else:
                parser["members"] = int(members)
        if views is not None:
            if parser.get("views") is None:
                raise ValueError(f"{bundle.name} reads one fixed view (no 'views' in its inference config); views cannot be chosen")
            parser["views"] = as_views(views)
        net = parser.get_parsed_content("network_def", instantiate=True)
    finally:
        sys.path.remove(str(bundle))
    if weights:
        path = bundle / "models" / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(f"the bundle has no model weights: {path} is missing")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or corrupt file: zip, pickle or EOF errors
            raise ValueError(f"cannot read the model weights {path}: {type(e).__name__}: {e} "
                             f"(the file is truncated or corrupt; copy or download it again)") from e
        if not isinstance(state, dict):
            raise ValueError(f"cannot use the model weights {path}: not a state dict ({type(state).__name__})")
        if total is not None and members is not None:
            keep = int(parser["members"])
            state = {k: v for k, v in state.items() if not k.startswith("net.nets.") or int(k.split(".")[2]) < keep}
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"the model weights {path} do not fit the bundle's network_def: {str(e).splitlines()[0]}") from e
    return net.to(device).eval(), parser


class Predictor:
    """Segment cases with a bundle's network.

    Args:
        bundle: bundle folder (default: the shipped one).
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto`` (bfloat16 where the CPU/GPU has it, else fp32), ``fp32`` or ``bf16``.
        labels: ``brats`` (ET = 4) or ``brats2023`` (ET = 3).
        tta: average sigmoid outputs over flips of the in-plane axes (nnU-Net habit).
        members: use the first N members of an ensemble bundle (default: all; 1 is the
            fast single-model option).
        views: the slice views the network reads and averages (default: the bundle's
            ``views``; ``"axial"`` alone is the fast option). The post-processing stays the
            bundle's, chosen by cross-validation for its own views.
        min_component: remove connected tumour components smaller than this many voxels
            (0 = off; ``None``: the bundle's ``min_component``, chosen by cross-validation).
        et_to_necrosis: an enhancing tumour smaller than this many voxels becomes necrosis
            (0 = off; ``None``: the bundle's ``et_to_necrosis``).
        min_fraction: also remove tumour components smaller than this fraction of the largest
            (0 = off; ``None``: the bundle's ``min_fraction``, chosen by cross-validation).
        fill_core_holes: whole-tumour voxels enclosed by the tumour core in a slice become
            necrosis (``None``: the bundle's ``fill_core_holes``, chosen by cross-validation).
        threads: torch CPU threads (``None`` leaves torch's default).
        register: ``auto`` registers the modalities (SimpleITK, rigid, mutual information) when
            they are on different grids, ``always`` registers every four-file case, ``never``
            reports different grids as an error.
        skull_strip: ``auto`` zeroes the four modalities outside a brain mask
            (:mod:`brainseg3d.preprocessing.skullstrip`, after registration) when the reference modality
            does not look skull-stripped (:func:`brainseg3d.preprocessing.registration.looks_skull_stripped`);
            ``never`` leaves the input as it is (BraTS inputs are never stripped in ``auto``).
        quality: add a ``quality`` block to each report (predicted Dice per region, a review
            flag and its reasons; :mod:`brainseg3d.inference.quality`) when the bundle has a calibration
            (``configs/quality.json``).
        uncertainty: also return a per-voxel uncertainty map (uint8 percent on the input grid,
            0 = every member sure, 100 = a coin flip) as :attr:`Prediction.uncertainty`.
    """

    def __init__(
        self,
        bundle: str | os.PathLike | None = None,
        device: str = "auto",
        precision: str = "auto",
        labels: str = "brats",
        tta: bool = False,
        members: int | None = None,
        min_component: int | None = None,
        et_to_necrosis: int | None = None,
        threads: int | None = None,
        register: str = "auto",
        skull_strip: str = "auto",
        quality: bool = True,
        uncertainty: bool = False,
        min_fraction: float | None = None,
        views: str | list[str] | None = None,
        fill_core_holes: bool | None = None,
    ):
        if skull_strip not in ("auto", "never"):
            raise ValueError(f"skull_strip must be auto or never, got {skull_strip!r}")
        self.skull_strip = skull_strip
        if register not in ("auto", "always", "never"):
            raise ValueError(f"register must be auto, always or never, got {register!r}")
        self.register = register
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
        if precision == "auto":
            precision = "bf16" if bf16_supported(self.device) else "fp32"
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
        if labels not in LABEL_SCHEMES:
            raise ValueError(f"labels must be one of {sorted(LABEL_SCHEMES)}, got {labels!r}")
        self.bundle = Path(bundle or DEFAULT_BUNDLE).resolve()
        self.network, parser = load_bundle_network(self.bundle, self.device, members=members, views=views)
        self.members = int(parser.get("members", 1))
        self.views = list(getattr(self.network, "views", ["axial"]))
        if hasattr(self.network, "bf16"):
            self.network.bf16 = precision == "bf16"
        self.precision, self.labels, self.tta = precision, labels, tta
        self.min_component = int(parser.get("min_component", 0) if min_component is None else min_component)
        self.et_to_necrosis = int(parser.get("et_to_necrosis", 0) if et_to_necrosis is None else et_to_necrosis)
        self.min_fraction = float(parser.get("min_fraction", 0.0) if min_fraction is None else min_fraction)
        self.fill_core_holes = bool(parser.get("fill_core_holes", False) if fill_core_holes is None else fill_core_holes)
        self.thresholds = [float(t) for t in parser.get("thresholds", [0.5, 0.5, 0.5])]
        self._post = PostprocessRegions(self.min_component, self.et_to_necrosis, min_fraction=self.min_fraction,
                                        fill_core_holes=self.fill_core_holes)  # on the thresholded regions
        self._thresholds = torch.tensor(self.thresholds, device=self.device).reshape(3, 1, 1, 1)
        self.et_label = LABEL_SCHEMES[labels]
        self.model_name = self.bundle.name
        meta = self.bundle / "configs" / "metadata.json"
        self.model_version = __import__("json").loads(meta.read_text()).get("version", "?") if meta.exists() else "?"
        self._chains: dict = {}
        # on a GPU the z-score runs there (ms instead of ~0.25 s of a loader thread's CPU);
        # on a CPU it stays in the loader thread, which runs beside inference
        self.normalize_on_device = self.device.type != "cpu"
        self._normalizer = NormalizeIntensity(nonzero=True, channel_wise=True)
        self.calibration = load_calibration(self.bundle) if quality else None
        self.uncertainty = bool(uncertainty)
        self._members = member_network(self.network) if self.calibration or self.uncertainty else None
        #: where the per-case work folders (registration, skull stripping) go; ``None``: the
        #: system temp folder. The batch runner points it at the output folder.
        self.workdir_root: str | os.PathLike | None = None
        clean_stale(tempfile.gettempdir())  # work folders of killed runs (only of dead processes)

    def chain(self, channel_dim=None, load: bool = True):
        """The preprocessing chain (cached per input layout); without the z-score when
        :attr:`normalize_on_device` (then :meth:`predict` applies it on the device)."""
        key = (channel_dim, load)
        if key not in self._chains:
            norm = None if self.normalize_on_device else "zscore"
            # the input checks (brainseg3d.core.checks) run on the raw channels, right after loading
            self._chains[key] = with_input_checks(preprocessing(["image"], load=load, channel_dim=channel_dim, normalize=norm))
        return self._chains[key]

    def _input(self, image: torch.Tensor) -> torch.Tensor:
        x = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
        x = x.to(self.device, torch.float32, non_blocking=True)
        if self.normalize_on_device:
            x = self._normalizer(x)
        return x[None]

    @torch.inference_mode()
    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return flip_mean_probability(self.network, x, self.tta)[0]

    @torch.inference_mode()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Sigmoid region probabilities ``[3, H, W, D]`` (CPU) for a preprocessed ``[4, H, W, D]``."""
        return self._probabilities(self._input(image)).cpu()

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """The device part of a case: preprocessed ``[4, H, W, D]`` -> uint8 BraTS label map
        ``[1, H, W, D]`` on the CPU, in the preprocessed (cropped, RAS) space. Thresholding
        and label assembly run on the device, so only a uint8 map crosses back."""
        return self._predict(image)[0]

    @torch.inference_mode()
    def _predict(self, image: torch.Tensor) -> tuple[torch.Tensor, dict | None]:
        """:meth:`predict`, plus the quality estimate's inputs when the predictor makes one:
        ``{"features", "agreement", "uncertainty"}`` (from each member's probabilities, in the
        same network pass)."""
        x = self._input(image)
        estimate = None
        if self._members is None:
            prob = self._probabilities(x)
        else:
            net, m = self._members
            self._members[0].bf16 = getattr(self.network, "bf16", False)
            member_probs = flip_mean_probability(net, x, self.tta)[0]
            member_probs = member_probs.reshape(m, 3, *member_probs.shape[1:])
            # the ensemble's own arithmetic (ProbabilityMean: the logit of the mean), so the mask
            # is the one `monai.bundle run` writes
            total = torch.zeros((), dtype=torch.float32, device=member_probs.device)
            for i in range(m):
                total = total + member_probs[i]
            prob = torch.sigmoid(torch.logit(total / m, eps=1e-6))
            estimate = {}
            if self.calibration is not None:
                use = self.calibration["features"]
                member_probs = candidate_box(member_probs)  # once, for both
                cal = self.calibration  # the features exactly as the calibration was fitted
                estimate["features"] = ensemble_features(member_probs, self.thresholds, features=use, post=cal.get("postprocessing"),
                                                         reach_mm=cal.get("penumbra_reach_mm"))
                estimate["agreement"] = member_agreement(member_probs, self.thresholds) if m > 1 else None
            if self.uncertainty:  # 1 - |2p - 1| of the mean, the most uncertain region per voxel
                u = (1.0 - (2.0 * prob - 1.0).abs()).amax(0, keepdim=True)
                estimate["uncertainty"] = (u * 100.0 + 0.5).to(torch.uint8).cpu()
        regions = prob > self._thresholds  # per region, chosen by CV
        if self.min_component > 0 or self.et_to_necrosis > 0 or self.min_fraction > 0 or self.fill_core_holes:
            regions = self._post(regions.cpu())
        return RegionsToLabels(self.et_label)(regions).cpu(), estimate

    def _add_estimate(self, pred: "Prediction", estimate: dict | None, reasons: Sequence[str] = ()) -> None:
        """The ``quality`` block of the report (after every warning is known): the input's
        warnings and ``reasons`` (registration, skull stripping) are reasons for review."""
        if estimate and "features" in estimate:
            pred.report["quality"] = quality_block(self.calibration, estimate["features"],
                                                   [*pred.report.get("warnings", []), *reasons], estimate.get("agreement"),
                                                   pred.report.get("volumes"))

    def segment_data(self, data: dict, chain, reference: nib.Nifti1Image | None = None, case_id: str = "case") -> Prediction:
        """Segment one preprocessed dict (output of ``chain``); return the label on the input grid."""
        t0 = time.perf_counter()
        label, estimate = self._predict(data["image"])
        pred = self._finish(label, data, chain, reference, case_id, t0, estimate)
        if data.get("input_warnings"):
            add_warnings(pred.report, data["input_warnings"])
        self._add_estimate(pred, estimate)
        return pred

    def _finish(self, label: torch.Tensor, data: dict, chain, reference, case_id: str, t0: float,
                estimate: dict | None = None) -> Prediction:
        """:func:`brainseg3d.inference.export.to_input_grid`."""
        return to_input_grid(self, label, data, chain, reference, case_id, t0, estimate)

    def load(self, case: Case) -> LoadedCase:
        """Read and preprocess a case (registering its modalities first when needed):
        :func:`brainseg3d.inference.prepare.prepare_case`.

        Raises:
            CaseError: naming the case and the problem (missing modality, unreadable file,
                different grids with ``register="never"``, NaN values, ...).
        """
        return prepare_case(self, case)

    def segment_loaded(self, loaded: LoadedCase) -> Prediction:
        """Segment a :class:`LoadedCase`; the mask goes on the input grid (for a registered
        case: the reference modality's original grid).

        The same as ``finish_loaded(loaded, predict_loaded(loaded))``: the batch runner calls
        the two halves in different threads, so the device never waits for CPU post-processing.
        """
        t0 = time.perf_counter()
        try:
            label = self.predict_loaded(loaded)
        except BaseException:
            self.discard(loaded)
            raise
        return self.finish_loaded(loaded, label, t0)

    def predict_loaded(self, loaded: LoadedCase) -> torch.Tensor:
        """:meth:`predict` on a loaded case (its workdir, if any, stays for :meth:`finish_loaded`;
        the quality estimate's inputs stay in ``loaded.estimate``)."""
        label, loaded.estimate = self._predict(loaded.data["image"])
        return label

    @staticmethod
    def discard(loaded: LoadedCase) -> None:
        """Remove a loaded case's temporary files (registration / skull stripping)."""
        if loaded.workdir:
            shutil.rmtree(loaded.workdir, ignore_errors=True)

    def finish_loaded(self, loaded: LoadedCase, label: torch.Tensor, t0: float | None = None) -> Prediction:
        """Post-process :meth:`predict_loaded`'s label map into the :class:`Prediction` on the
        input grid: :func:`brainseg3d.inference.export.finish_case`."""
        return finish_case(self, loaded, label, t0)

    def segment_case(self, case: Case) -> Prediction:
        """Segment a discovered case; the label image has the input's exact shape and affine."""
        t0 = time.perf_counter()
        pred = self.segment_loaded(self.load(case))
        pred.report["seconds"] = round(time.perf_counter() - t0, 3)
        return pred

    def segment_image(self, image, affine: np.ndarray | None = None, case_id: str = "image") -> Prediction:
        """Segment in-memory data.

        Args:
            image: a 4D :class:`nibabel.Nifti1Image` (channel-last), a list of four 3D
                ``Nifti1Image`` in the MODALITIES order, or an array ``[4, X, Y, Z]``.
            affine: voxel-to-world (RAS) affine for an array input (default identity).
        """
        if isinstance(image, (list, tuple)):
            affine = image[0].affine
            arr = np.stack([np.asarray(i.dataobj, dtype=np.float32) for i in image])
        elif isinstance(image, nib.Nifti1Image):
            affine = image.affine
            arr = np.asarray(image.dataobj, dtype=np.float32)
            arr = np.moveaxis(arr, -1, 0) if channel_layout(arr.shape) == "last" else arr
        else:
            arr = np.asarray(image, dtype=np.float32)
            affine = np.eye(4) if affine is None else np.asarray(affine)
        while arr.ndim > 4 and arr.shape[-1] == 1:  # [4, X, Y, Z, 1]
            arr = arr[..., 0]
        if arr.ndim != 4 or arr.shape[0] != 4:
            raise CaseError(case_id, f"expected 4 modalities [4, X, Y, Z], got shape {arr.shape}")
        affines = {m: i.affine for m, i in zip(MODALITIES, image)} if isinstance(image, (list, tuple)) else {"image": affine}
        for name, a in affines.items():
            check_affine(a, case_id, name)
        check_handedness(affines, case_id)
        mt = MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)), affine=torch.as_tensor(affine, dtype=torch.float64))
        mt.meta["original_channel_dim"] = 0
        mt.meta["original_affine"] = torch.as_tensor(affine, dtype=torch.float64)
        mt.meta["space"] = "RAS"
        chain = self.chain(0, load=False)
        try:
            data = chain({"image": mt, "case": case_id})
        except Exception as e:
            check = _case_error(e)
            if check is not None:
                raise check from e
            raise CaseError(case_id, f"cannot preprocess: {_root_cause(e)}") from e
        check_network_size(data["image"].shape[1:], case_id)
        reference = nib.Nifti1Image(np.zeros(arr.shape[1:], np.uint8), affine)
        return self.segment_data(data, chain, reference, case_id)


