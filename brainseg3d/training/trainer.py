"""Training with MONAI's Ignite engines: one YAML config per experiment.

``brainseg3d train configs/unet25d.yaml`` (or :func:`train`) does:

1. read the config with MONAI's :class:`~monai.bundle.ConfigParser` (``_target_`` network,
   ``@`` references, ``$`` expressions, ``--key#sub value`` overrides);
2. preprocess each training / validation volume once into memory
   (:class:`~brainseg3d.data.slices.VolumeCache`);
3. train the network on 2.5D slices (or 3D patches) with BCE + Dice on [WT, TC, ET]
   (:class:`monai.losses.DiceCELoss`, sigmoid), MONAI random augmentation, Adam + cosine LR;
4. validate per volume every ``val_interval`` epochs: every slice of each validation case is
   predicted, the 3D volume rebuilt and scored with MONAI Dice per region; the best mean Dice
   is kept as ``best_model.pt``;
5. write ``metrics.csv``, ``metrics.json`` and a loss / Dice curve ``curves.png`` to the output
   folder, and a checkpoint every epoch (``checkpoint.pt``) for ``--resume``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
import yaml
from ignite.engine import Events
from ignite.handlers import ProgressBar
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import CheckpointLoader, CheckpointSaver, LrScheduleHandler, MeanDice, ValidationHandler, from_engine
from monai.inferers import SimpleInferer
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)
from monai.utils import set_determinism

from brainseg3d.data.datalist import load_datalist
from brainseg3d.data.pool import fold_items
from brainseg3d.core.training import SliceResampler
from brainseg3d.data.slices import SliceDataset, VolumeCache
from brainseg3d.networks import Autocast, bf16_supported, load_encoder_weights, load_initial_weights, volume_network
from brainseg3d.core.labels import REGIONS
from brainseg3d.preprocessing.transforms import preprocessing

__all__ = ["load_config", "check_keys", "CONFIG_KEYS", "train", "TrainingRun", "augmentation"]

logger = logging.getLogger(__name__)


#: the recipe every experiment config starts from (loss, optimizer, schedule as `_target_` components)
RECIPE = Path(__file__).parent / "recipe.yaml"


def load_config(path: str | os.PathLike | Sequence[str | os.PathLike], overrides: dict | None = None) -> ConfigParser:
    """Read a YAML/JSON experiment config into a MONAI ConfigParser and apply overrides.

    Args:
        path: the config file, or several: later files override earlier ones key by key, and
            their keys may use MONAI's ``#`` paths (``train#max_epochs: 16``), as
            ``monai.bundle run --config_file "[a.yaml, b.yaml]"`` merges them. They are read
            over :data:`RECIPE` (the default loss, optimizer and schedule).
        overrides: ``{"train#max_epochs": 2, ...}`` (MONAI's ``#`` path syntax).
    """
    parser = ConfigParser()
    paths = config_paths(path)
    parser.read_config([str(RECIPE), *paths])
    for key, value in (overrides or {}).items():
        parser[key] = value
    check_keys(parser.get(), " + ".join(paths))
    return parser


#: the keys an experiment config may set: top level, and inside its ``data`` and ``train`` blocks
CONFIG_KEYS = {
    "": {"_meta_", "name", "mode", "k", "views", "seed", "divisible", "network", "data", "augmentation", "train", "loss", "optimizer", "lr_scheduler", "val_inferer"},
    "data": {"datalist", "dataset_dir", "fold", "roots", "normalize", "patch", "tumour_ratio", "case_balance", "source_weights"},
    "train": {"batch_size", "lr", "weight_decay", "max_epochs", "max_minutes", "max_cpu_minutes", "val_interval", "bf16", "encoder_weights", "init_weights"},
}


def check_keys(config: dict, where: str) -> None:
    """Fail on a key no part of training reads (a misspelt ``train#max_epoch`` would otherwise
    be silently ignored and the default used).

    Raises:
        ValueError: naming the key, the config file(s) and the keys that are read.
    """
    for block, known in CONFIG_KEYS.items():
        node = config if not block else config.get(block)
        if not isinstance(node, dict):
            continue
        unknown = sorted(set(node) - known)
        if unknown:
            name = ", ".join(f"{block}#{k}" if block else k for k in unknown)
            raise ValueError(f"{where}: unknown config key {name} (known{' in ' + block if block else ''}: {', '.join(sorted(known))})")


def config_paths(config: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The config file(s) as a list of strings (one file or several merged ones)."""
    return [str(config)] if isinstance(config, (str, os.PathLike)) else [str(c) for c in config]


def config_name(parser: ConfigParser, config) -> str:
    """The experiment's ``name``, or the stem of its last config file."""
    return parser.get("name") or Path(config_paths(config)[-1]).stem


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def augmentation(mode: str, patch, keys=("image", "label")) -> Compose:
    """Random training augmentation (MONAI): crop, flips, small affine, intensity scale/shift."""
    keys = list(keys)
    if mode == "2.5d":
        spatial = [
            SpatialPadd(keys, spatial_size=patch),
            RandSpatialCropd(keys, roi_size=patch, random_size=False),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandAffined(
                keys,
                prob=0.3,
                rotate_range=math.radians(15),
                scale_range=0.1,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
        ]
    else:
        spatial = [
            SpatialPadd(keys, spatial_size=patch),
            RandCropByPosNegLabeld(keys, label_key=keys[1], spatial_size=patch, pos=2, neg=1, num_samples=1),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
        ]
    intensity = [
        RandScaleIntensityd(keys[0], factors=0.1, prob=0.5),
        RandShiftIntensityd(keys[0], offsets=0.1, prob=0.5),
    ]
    return Compose(spatial + intensity)


class RunClock:
    """Wall and CPU minutes a run has spent, kept through a resume: it is saved in every
    epoch checkpoint (``state_dict``) and a resumed run goes on counting from the saved
    figures (``load_state_dict``), so time budgets, ``metrics.csv`` and ``summary.json``
    cover the whole training, not only the part since the last interruption."""

    def __init__(self):
        self.wall0, self.cpu0 = time.time(), time.process_time()
        self.saved_minutes = self.saved_cpu_minutes = 0.0
        self.cpu_unrecorded_epochs = 0  # epochs before a resume from a checkpoint without the clock

    def minutes(self) -> float:
        return self.saved_minutes + (time.time() - self.wall0) / 60

    def cpu_minutes(self) -> float:
        return self.saved_cpu_minutes + (time.process_time() - self.cpu0) / 60

    def state_dict(self) -> dict:
        return {"minutes": self.minutes(), "cpu_minutes": self.cpu_minutes()}

    def load_state_dict(self, state: dict) -> None:
        self.saved_minutes, self.saved_cpu_minutes = float(state["minutes"]), float(state["cpu_minutes"])


class MetricsLog:
    """Ignite handler: per-epoch train loss, validation Dice, learning rate and time
    to ``metrics.csv`` / ``metrics.json``, and ``curves.png`` (loss and Dice curves)."""

    def __init__(self, out_dir: Path, evaluator, optimizer, clock: RunClock):
        self.out_dir, self.evaluator, self.optimizer, self.clock = out_dir, evaluator, optimizer, clock
        self.rows: list[dict] = []
        self.losses: list[float] = []
        path = out_dir / "metrics.json"
        if path.exists():  # resumed run: keep the history
            self.rows = json.loads(path.read_text()).get("epochs", [])

    def attach(self, trainer) -> None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _iteration(self, engine) -> None:
        out = engine.state.output
        out = out[0] if isinstance(out, list) else out
        self.losses.append(float(out["loss"]))

    def _epoch(self, engine) -> None:
        metrics = self.evaluator.state.metrics if self.evaluator.state.epoch == engine.state.epoch else {}
        row = {
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "train_loss": float(np.mean(self.losses)) if self.losses else float("nan"),
            "lr": self.optimizer.param_groups[0]["lr"],
            "minutes": self.clock.minutes(),
        }
        for name in ["val_mean_dice"] + [f"val_dice_{r}" for r in REGIONS]:
            row[name] = float(metrics[name]) if name in metrics else float("nan")
        self.losses = []
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        self.write()

    def write(self) -> None:
        with open(self.out_dir / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            w.writeheader()
            w.writerows(self.rows)
        (self.out_dir / "metrics.json").write_text(json.dumps({"epochs": self.rows}, indent=1))
        plot_curves(self.rows, self.out_dir / "curves.png")


def plot_curves(rows: list[dict], path: Path) -> None:
    """Loss and per-region validation Dice against epochs, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r["train_loss"] for r in rows], "k-")
    a.set(xlabel="epoch", ylabel="train loss (BCE + Dice)", title="training loss")
    for name, colour in zip(["val_mean_dice"] + [f"val_dice_{r}" for r in REGIONS], ["k", "g", "b", "r"]):
        pts = [(r["epoch"], r[name]) for r in rows if not math.isnan(r[name])]
        if pts:
            b.plot(*zip(*pts), "o-", color=colour, label=name.replace("val_dice_", "").replace("val_", ""), ms=3)
    b.set(xlabel="epoch", ylabel="per-volume Dice", ylim=(0, 1), title="validation Dice")
    if b.get_legend_handles_labels()[0]:  # a run validated at its end only has no Dice points before it
        b.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


@torch.inference_mode()
def write_out_of_fold(eval_net, items, cache, out: Path, dev, inferer=None) -> None:
    """Held-out probabilities of a fold's final weights: ``out/<case>.npz`` holding ``prob``
    (``[3, X, Y, Z]`` sigmoid of WT / TC / ET, uint8 0-255) and ``label`` (the regions), in
    the preprocessed space (RAS, 1 mm, cropped to the brain), plus ``source`` and ``case``.

    Args:
        inferer: how ``eval_net`` reads a whole volume (a MONAI inferer, e.g. the sliding
            windows of a 3D config's ``val_inferer``); default: ``SimpleInferer``, one call.
    """
    inferer = inferer or SimpleInferer()
    out.mkdir(parents=True, exist_ok=True)
    eval_net.eval()
    for it, img, lab in zip(items, cache.images, cache.labels):
        x = img[None].float().to(dev)
        prob = torch.sigmoid(inferer(x, eval_net))[0].float().cpu()
        q = (prob * 255 + 0.5).clamp_(0, 255).to(torch.uint8).numpy()
        tmp = out / f".{it['case']}.{os.getpid()}.npz"
        np.savez_compressed(tmp, prob=q, label=lab.numpy(), case=it["case"], source=it.get("source", ""))
        os.replace(tmp, out / f"{it['case']}.npz")


def _region_output(i: int):
    def transform(output):
        preds, labels = from_engine(["pred", "label"])(output)
        return [p[i : i + 1] for p in preds], [y[i : i + 1] for y in labels]

    return transform


def _init_distributed(dev: torch.device) -> tuple[bool, int, torch.device]:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPU)."""
    import ignite.distributed as idist
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        if not dist.is_initialized() and idist.model_name() != "serial":
            # a process group someone else destroyed (e.g. an earlier workflow in this process):
            # ignite still believes it is distributed; put it back to serial
            from ignite.distributed.comp_models import _SerialModel
            from ignite.distributed.utils import _set_model

            _set_model(_SerialModel())
        return False, 0, dev

    if dev.type == "cuda":
        dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    idist.sync()  # ignite sets up its (collective) context now, on every rank, not lazily on rank 0
    return True, dist.get_rank(), dev


class TrainingRun:
    """One training run as named steps (nnU-Net's trainer habit): override a step in a subclass
    to change that part only. :func:`train` runs them in order:

    :meth:`configure` (config, output folder, device, seed) -> :meth:`build_data` (volumes
    preprocessed once, slice datasets, loaders) -> :meth:`build_components` (network, loss,
    optimizer, schedule from the config) -> :meth:`build_evaluator` (per-volume validation) ->
    :meth:`build_trainer` (the Ignite engine) -> :meth:`attach_handlers` (epoch resampling,
    validation, time budget, metrics log, checkpoints, resume, progress) -> ``trainer.run()`` ->
    :meth:`finish` (final weights, out-of-fold predictions, summary).
    """

    def __init__(self, config, output=None, max_epochs=None, max_steps=None, resume=None, dataset_dir=None, device="auto",
                 overrides=None, max_val_cases=None, progress=True, fold=None, roots=None):
        self.config, self.output, self.max_steps, self.resume = config, output, max_steps, resume
        self.dataset_dir, self.device_name, self.max_val_cases, self.progress, self.roots = dataset_dir, device, max_val_cases, progress, roots
        self.overrides = dict(overrides or {})
        if fold is not None:
            self.overrides["data#fold"] = int(fold)
        if max_epochs is not None:
            self.overrides["train#max_epochs"] = int(max_epochs)

    def configure(self) -> None:
        """The config (over the base recipe), the output folder, the device (DDP under
        torchrun) and the seed; rank 0 writes the config as run."""
        self.parser = parser = load_config(self.config, self.overrides)
        self.name = config_name(parser, self.config)
        self.fold = parser.get("data", {}).get("fold")
        self.out_dir = Path(self.output or Path("runs") / self.name / (f"fold{self.fold}" if self.fold is not None else ""))
        self.distributed, rank, self.dev = _init_distributed(resolve_device(self.device_name))
        self.main_rank = rank == 0
        self.progress = self.progress and self.main_rank
        if self.main_rank:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(parser.get(), sort_keys=False))  # the config as run
        self.seed = int(parser.get("seed", 0))
        set_determinism(self.seed)
        self.mode, self.k, self.views = parser.get("mode", "2.5d"), int(parser.get("k", 0)), parser.get("views", "axial")
        self.data_cfg = parser.get_parsed_content("data")
        self.train_cfg = parser.get_parsed_content("train")
        self.patch = list(self.data_cfg["patch"])
        self.bf16 = bool(self.train_cfg.get("bf16", False)) and bf16_supported(self.dev)

    def build_data(self) -> None:
        """Each volume preprocessed once; 2.5D slice (or 3D patch) training set, whole-volume
        validation set; DDP samplers; loaders."""
        data_cfg, seed = self.data_cfg, self.seed
        datalist = data_cfg["datalist"]
        if self.fold is not None:
            tr_items, va_items = fold_items(datalist, int(self.fold), {**(data_cfg.get("roots") or {}), **(self.roots or {})})
            va_items = va_items[: self.max_val_cases]
        else:
            tr_items = load_datalist(datalist, "training", self.dataset_dir or data_cfg.get("dataset_dir"))
            va_items = load_datalist(datalist, "validation", self.dataset_dir or data_cfg.get("dataset_dir"))[: self.max_val_cases]
        pre = preprocessing(["image", "label"], normalize=data_cfg.get("normalize", "zscore"))
        tr_cache = VolumeCache(tr_items, pre, progress=self.progress)
        self.va_items, self.va_cache = va_items, VolumeCache(va_items, pre, progress=self.progress)
        aug = Compose(self.parser.get_parsed_content("augmentation")) if "augmentation" in self.parser.get() else augmentation(self.mode, self.patch)
        if self.mode == "2.5d":
            self.tr_ds = SliceDataset(tr_cache, k=self.k, tumour_ratio=data_cfg.get("tumour_ratio", 0.7), transform=aug, seed=seed,
                                      views=self.views, case_balance=bool(data_cfg.get("case_balance", False)),
                                      sources=[it.get("source", "") for it in tr_items], source_weights=data_cfg.get("source_weights"))
        else:
            self.tr_ds = Dataset([{"image": i, "label": y} for i, y in zip(tr_cache.images, tr_cache.labels)], transform=aug)
        gen = torch.Generator().manual_seed(seed)
        va_ds = Dataset([{"image": i, "label": y} for i, y in zip(self.va_cache.images, self.va_cache.labels)])
        self.tr_sampler = va_sampler = None
        if self.distributed:
            from monai.data import DistributedSampler

            self.tr_sampler = DistributedSampler(self.tr_ds, shuffle=True, seed=seed)
            va_sampler = DistributedSampler(va_ds, shuffle=False, even_divisible=False)
        batch = int(self.train_cfg["batch_size"])
        self.tr_loader = DataLoader(self.tr_ds, batch_size=batch, shuffle=self.tr_sampler is None, sampler=self.tr_sampler, num_workers=0,
                                    generator=gen, drop_last=len(self.tr_ds) > batch)
        self.va_loader = DataLoader(va_ds, batch_size=1, num_workers=0, sampler=va_sampler)

    def build_components(self) -> None:
        """Network, loss, optimizer and schedule: config components (defaults: ``recipe.yaml``)."""
        parser, train_cfg = self.parser, self.train_cfg
        self.n_epochs = int(train_cfg["max_epochs"])
        self.epoch_length = len(self.tr_loader)
        if self.max_steps:
            self.epoch_length = min(self.epoch_length, int(self.max_steps))
            self.n_epochs = max(1, math.ceil(int(self.max_steps) / self.epoch_length))
        parser["train#max_epochs"] = self.n_epochs  # before anything is instantiated (setting resets the parser)
        parser["train#weight_decay"] = float(train_cfg.get("weight_decay", 1e-5))
        self.net = parser.get_parsed_content("network").to(self.dev)
        load_encoder_weights(self.net, train_cfg.get("encoder_weights"))
        load_initial_weights(self.net, train_cfg.get("init_weights"), self.fold)  # a resumed run's checkpoint replaces it
        self.loss = parser.get_parsed_content("loss")
        self.opt = parser.get_parsed_content("optimizer")
        self.sched = parser.get_parsed_content("lr_scheduler")

    def build_evaluator(self) -> None:
        """Per-volume validation: every slice of a case predicted, the volume rebuilt, MONAI
        Dice per region; the best mean Dice is kept as ``best_model.pt``."""
        if self.mode == "2.5d":
            self.eval_net = volume_network(self.net, self.mode, k=self.k, bf16=self.bf16, divisible=int(self.parser.get("divisible", 16)),
                                           views=self.views)
        else:
            self.eval_net = volume_network(self.net, self.mode, bf16=self.bf16)
        self.val_inferer = val_inferer = self.parser.get_parsed_content("val_inferer")  # recipe.yaml's, or the config's own
        self.clock = RunClock()
        self.evaluator = SupervisedEvaluator(
            device=self.dev,
            val_data_loader=self.va_loader,
            network=self.eval_net,
            inferer=val_inferer,
            postprocessing=Compose([Activationsd("pred", sigmoid=True), AsDiscreted("pred", threshold=0.5)]),
            key_val_metric={"val_mean_dice": MeanDice(include_background=True, output_transform=from_engine(["pred", "label"]))},
            additional_metrics={f"val_dice_{r}": MeanDice(output_transform=_region_output(i)) for i, r in enumerate(REGIONS)},
            val_handlers=[
                CheckpointSaver(str(self.out_dir), {"network": self.net}, save_key_metric=True, key_metric_filename="best_model.pt"),
            ] if self.main_rank else None,
        )

    def build_trainer(self) -> None:
        """The Ignite engine (bfloat16 autocast where the device has it, DDP under torchrun)."""
        train_net = Autocast(self.net, enabled=self.bf16)
        if self.distributed:
            train_net = torch.nn.parallel.DistributedDataParallel(train_net, device_ids=[self.dev] if self.dev.type == "cuda" else None)
        self.trainer = SupervisedTrainer(
            device=self.dev,
            max_epochs=self.n_epochs,
            epoch_length=self.epoch_length,
            train_data_loader=self.tr_loader,
            network=train_net,
            optimizer=self.opt,
            loss_function=self.loss,
            inferer=SimpleInferer(),
            train_handlers=[LrScheduleHandler(self.sched, print_lr=False)],
        )

    def attach_handlers(self) -> None:
        """Epoch resampling, validation, the time budget, the metrics log, checkpoints every
        epoch, resume and the progress bar."""
        trainer, evaluator = self.trainer, self.evaluator
        if self.mode == "2.5d":  # a new slice draw per epoch, the same on every rank (MONAI sets the DDP sampler's epoch)
            SliceResampler(self.tr_ds).attach(trainer)

        val_interval = int(self.train_cfg.get("val_interval", 1))
        ValidationHandler(interval=val_interval, validator=evaluator).attach(trainer)
        budget = self.train_cfg.get("max_minutes")
        cpu_budget = self.train_cfg.get("max_cpu_minutes")
        clock = self.clock

        @trainer.on(Events.EPOCH_COMPLETED)
        def _stop_on_budget_or_end(engine):
            last = engine.state.epoch == engine.state.max_epochs
            over = budget is not None and clock.minutes() > float(budget)
            over = over or (cpu_budget is not None and clock.cpu_minutes() > float(cpu_budget))
            if (last or over) and engine.state.epoch % val_interval != 0:
                evaluator.run(engine.state.epoch)  # always score the final weights
            if over:
                logger.info("time budget reached at epoch %d", engine.state.epoch)
                engine.terminate()

        self.log = MetricsLog(self.out_dir, evaluator, self.opt, clock)
        ckpt = {"network": self.net, "optimizer": self.opt, "lr_scheduler": self.sched, "trainer": trainer, "clock": clock}
        if self.main_rank:
            self.log.attach(trainer)
            CheckpointSaver(str(self.out_dir), ckpt, save_interval=1, n_saved=1, final_filename="checkpoint.pt", save_final=True,
                            epoch_level=True, file_prefix="epoch").attach(trainer)
        if self.resume:
            CheckpointLoader(str(self.resume), self._resume_objects(ckpt), map_location=self.dev).attach(trainer)
        if self.progress:
            ProgressBar(persist=False, desc=self.name).attach(trainer, output_transform=lambda o: {"loss": float((o[0] if isinstance(o, list) else o)["loss"])})

    def _resume_objects(self, ckpt: dict) -> dict:
        """What a resume restores: everything ``ckpt`` holds; from a checkpoint written
        before the run clock was saved, everything but the clock, whose wall minutes then
        come from the metrics log's row of the checkpoint's epoch (its CPU minutes were not
        recorded, and the summary says so)."""
        saved = torch.load(self.resume, map_location="cpu", weights_only=True, mmap=True)  # a peek: tensors stay on disk
        if "clock" in saved:
            return ckpt
        state = saved["trainer"]  # Ignite's engine state: the epoch, or the iteration and epoch length
        epoch = int(state["epoch"]) if "epoch" in state else int(state["iteration"]) // int(state["epoch_length"])
        row = next((r for r in self.log.rows if r["epoch"] == epoch), None)
        if row is not None:
            self.clock.saved_minutes = float(row["minutes"])
        self.clock.cpu_unrecorded_epochs = epoch
        logger.warning("%s: the checkpoint predates the run clock; CPU minutes of epochs 1-%d are not counted", self.resume, epoch)
        return {k: v for k, v in ckpt.items() if k != "clock"}

    def finish(self) -> dict:
        """The final weights (``final_model.pt``), the out-of-fold predictions of a finished
        fold, and the run's summary (``summary.json``)."""
        trainer, net, out_dir = self.trainer, self.net, self.out_dir
        if self.main_rank:
            torch.save(net.state_dict(), out_dir / "final_model.pt")
            if self.fold is not None and trainer.state.epoch >= self.n_epochs:
                write_out_of_fold(self.eval_net, self.va_items, self.va_cache, out_dir / "oof", self.dev, inferer=self.val_inferer)
        best = max((r for r in self.log.rows if not math.isnan(r["val_mean_dice"])), key=lambda r: r["val_mean_dice"], default=None)
        summary = {
            "name": self.name,
            "config": " ".join(config_paths(self.config)),
            "mode": self.mode,
            "k": self.k,
            "views": self.views,
            "epochs": trainer.state.epoch,
            "iterations": trainer.state.iteration,
            "train_minutes": round(self.clock.minutes(), 2),
            "train_cpu_minutes": round(self.clock.cpu_minutes(), 2),
            "best_epoch": best["epoch"] if best else None,
            "best_val_dice": {r: best[f"val_dice_{r}"] for r in REGIONS} | {"mean": best["val_mean_dice"]} if best else None,
            "validation_cases": [it["case"] for it in self.va_items],
            "fold": self.fold,
            "final_model": str(out_dir / "final_model.pt"),
            "bf16": self.bf16,
            "device": str(self.dev),
            "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
            "best_model": str(out_dir / "best_model.pt"),
            "params": sum(p.numel() for p in net.parameters()),
        }
        if self.clock.cpu_unrecorded_epochs:
            summary["cpu_minutes_unrecorded_epochs"] = self.clock.cpu_unrecorded_epochs
        summary["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
        if self.main_rank:
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
        return summary


def train(
    config: str | os.PathLike,
    output: str | os.PathLike | None = None,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    resume: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    device: str = "auto",
    overrides: dict | None = None,
    max_val_cases: int | None = None,
    progress: bool = True,
    fold: int | None = None,
    roots: dict | None = None,
    run_class: type[TrainingRun] = TrainingRun,
) -> dict:
    """Train the model a config describes; return a summary (best Dice, paths, minutes).

    Under ``torchrun --nproc_per_node N`` it trains with DistributedDataParallel: a
    :class:`monai.data.DistributedSampler` splits the slices (and validation volumes) across
    ranks, metrics are gathered across ranks, and rank 0 alone writes checkpoints and logs.

    Args:
        config: experiment YAML (see ``configs/``), or several merged key by key.
        output: output folder (default ``runs/<config name>``).
        max_epochs: override ``train#max_epochs``.
        max_steps: stop after this many iterations in all (smoke runs).
        resume: a ``checkpoint.pt`` written by an earlier run.
        dataset_dir: where the datalist's relative paths start (default: as recorded).
        device: ``auto``, ``cpu`` or ``cuda``.
        overrides: more config overrides, ``{"train#lr": 1e-3}``.
        max_val_cases: validate on the first N validation cases only (smoke runs).
        fold: cross-validation fold of a pool datalist (:mod:`brainseg3d.data.pool`): train on
            the other folds, validate on this one; the final weights (``final_model.pt``, not
            the best epoch, which would be chosen on the held-out cases) predict the held-out
            cases into ``oof/`` (out-of-fold probabilities, see :mod:`brainseg3d.training.cv`).
        roots: pool root name -> folder, replacing the recorded ones.
        run_class: the :class:`TrainingRun` (a subclass overrides single steps).
    """
    run = run_class(config, output, max_epochs, max_steps, resume, dataset_dir, device, overrides, max_val_cases, progress, fold, roots)
    run.configure()
    run.build_data()
    run.build_components()
    run.build_evaluator()
    run.build_trainer()
    run.attach_handlers()
    run.trainer.run()
    return run.finish()
