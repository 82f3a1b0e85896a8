"""Would a small 3D network on top of the 2.5D reading pay? A stacked, cross-validated experiment.

The 2.5D members see three slices at a time; the three views give them some 3D context, but no decision
sees the whole tumour. This trains a small 3D U-Net (MONAI ``UNet``) that reads, at half resolution, the
four z-scored modalities and the three-view out-of-fold region probabilities of a CV run, and adds a
correction to their logits. It is stacked the honest way: the refiner of fold ``i`` trains on the
out-of-fold predictions of the cases of the other folds (each made by a model that never saw that case,
as an unseen case's would be) and corrects the cases of fold ``i``, which neither it nor their 2.5D model
saw. Each case is scored with the run's post-processing, with and without the refiner, case by case.

    .venv/bin/python benchmarks/refine3d.py runs/shipped_members --root extra=EXTRA_DIR \\
        --post runs/shipped_members/postprocessing.json --work /tmp/refine3d \\
        --out bundles/brats_mri_2p5d_segmentation/docs/training/cv_soup_views3r_views_fh/refine3d

RUN: a CV run whose folds hold three-view out-of-fold predictions (``fold<i>/oof_axial+coronal+sagittal/``,
``benchmarks/rescore_shipped.sh`` makes them for the shipped members). ``--work`` caches the half-resolution
inputs and each fold's refiner (a rerun resumes: cached cases and finished folds are kept). Writes OUT.json
and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainseg3d.data.pool import load_pool, parse_roots  # noqa: E402
from brainseg3d.evaluation.metrics import binary_dice, nest_regions  # noqa: E402
from brainseg3d.evaluation.paired import bootstrap_ci  # noqa: E402
from brainseg3d.inference.postprocessing import postprocess_regions  # noqa: E402
from brainseg3d.io import write_record  # noqa: E402
from brainseg3d.preprocessing.transforms import preprocessing  # noqa: E402
from brainseg3d.training.cv import load_oof  # noqa: E402

VIEWS = "oof_axial+coronal+sagittal"
REGIONS = ("WT", "TC", "ET")
EPS = 1e-4


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(EPS, 1 - EPS))


def half(x: torch.Tensor) -> torch.Tensor:
    """``[C, X, Y, Z]`` -> 2x average pooled (odd sizes padded by replication)."""
    pad = [0, x.shape[3] % 2, 0, x.shape[2] % 2, 0, x.shape[1] % 2]
    x = F.pad(x[None], pad, mode="replicate") if any(pad) else x[None]
    return F.avg_pool3d(x, 2)[0]


def cache_inputs(run: str, pool: str, roots: dict, work: Path) -> list[dict]:
    """Per case: ``work/cases/<case>.pt`` with the half-resolution image, probabilities and soft label."""
    items = {it["case"]: it for it in load_pool(pool, roots)}
    chain = preprocessing(["image", "label"], normalize="zscore")
    (work / "cases").mkdir(parents=True, exist_ok=True)
    index = []
    oofs = load_oof(run, VIEWS)
    for n, oof in enumerate(oofs, 1):
        path = work / "cases" / f"{oof['case']}.pt"
        if not path.exists():
            d = chain(dict(items[oof["case"]]))
            img = torch.as_tensor(np.asarray(d["image"], dtype=np.float32))
            gt = np.asarray(d["label"]).astype(bool)
            if gt.shape != oof["label"].shape or not (gt == oof["label"]).all():
                raise ValueError(f"{oof['case']}: the preprocessed label differs from the one the prediction was scored on")
            prob = torch.as_tensor(oof["prob"])
            torch.save({"image": half(img).half(), "prob": half(prob).half(),
                        "label": half(torch.as_tensor(gt, dtype=torch.float32)).half(),
                        "shape": list(gt.shape[1:])}, path)
            print(f"[cache {n}/{len(oofs)}] {oof['case']}", file=sys.stderr, flush=True)
        index.append({"case": oof["case"], "source": oof["source"], "fold": oof["fold"], "path": str(path)})
    return index


def make_net(channels=(16, 32, 64, 128)) -> torch.nn.Module:
    """The refiner: 4 modalities + 3 logits in, a correction of the 3 region logits out, zero at the start."""
    from monai.networks.nets import UNet

    head = torch.nn.Conv3d(channels[0], 3, 1)  # a 1x1x1 head, zero: the refiner starts as the identity
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    body = UNet(3, 7, channels[0], channels, (2,) * (len(channels) - 1), num_res_units=1, norm="instance")
    return torch.nn.Sequential(body, torch.nn.PReLU(), head)


def _pad8(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    s = x.shape[-3:]
    p = [(8 - n % 8) % 8 for n in s]
    return F.pad(x, [0, p[2], 0, p[1], 0, p[0]]), tuple(s)


def refine_logits(net: torch.nn.Module, image: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """Half-resolution corrected logits ``[3, x, y, z]`` from half-resolution image and probabilities."""
    base = _logit(prob.float())
    x, s = _pad8(torch.cat([image.float(), base / 4.0])[None])
    delta = net(x)[0, :, : s[0], : s[1], : s[2]]
    return base + delta, delta


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice + BCE on the half-resolution soft labels (the nested regions)."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def train_fold(cases: list[dict], fold: int, work: Path, epochs: int, lr: float, seed: int) -> Path:
    """Train the refiner of ``fold`` on the other folds' cases; ``work/fold<i>.pt`` (kept if there)."""
    out = work / f"fold{fold}.pt"
    if out.exists():
        return out
    torch.manual_seed(seed + fold)
    rng = np.random.default_rng(seed + fold)
    train = [c for c in cases if c["fold"] != fold]
    data = [torch.load(c["path"]) for c in train]
    net = make_net()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * len(data)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    t0, step = time.perf_counter(), 0
    net.train()
    for epoch in range(epochs):
        total = 0.0
        for i in rng.permutation(len(data)):
            d = data[i]
            img, prob, lab = d["image"].float(), d["prob"].float(), d["label"].float()
            if rng.random() < 0.5:  # left-right mirroring (axis 0 of a RAS volume)
                img, prob, lab = img.flip(1), prob.flip(1), lab.flip(1)
            logits, _ = refine_logits(net, img, prob)
            loss = loss_fn(logits, lab)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            step += 1
        print(f"[fold {fold}] epoch {epoch + 1}/{epochs} loss {total / len(data):.4f} "
              f"({(time.perf_counter() - t0) / 60:.1f} min)", file=sys.stderr, flush=True)
    torch.save({"state_dict": net.state_dict(), "minutes": (time.perf_counter() - t0) / 60, "epochs": epochs,
                "train_cases": len(train)}, out)
    return out


@torch.inference_mode()
def score_fold(run: str, cases: list[dict], fold: int, ckpt: Path, post: dict) -> list[dict]:
    """Per held-out case of ``fold``: Dice per region with and without the refiner, the same post-processing."""
    net = make_net()
    net.load_state_dict(torch.load(ckpt)["state_dict"])
    net.eval()
    rows = []
    held = {c["case"]: c for c in cases if c["fold"] == fold}
    for oof in load_oof(run, VIEWS, cases=held):
        d = torch.load(held[oof["case"]]["path"])
        _, delta = refine_logits(net, d["image"], d["prob"])
        full = F.interpolate(delta[None], scale_factor=2, mode="trilinear", align_corners=False)[0]
        shape = oof["prob"].shape[1:]
        full = full[:, : shape[0], : shape[1], : shape[2]]
        refined = torch.sigmoid(_logit(torch.as_tensor(oof["prob"])) + full).numpy()
        gt = oof["label"]
        row = {"case": oof["case"], "source": oof["source"], "fold": fold}
        for name, prob in (("base", oof["prob"]), ("refined", refined)):
            pred = nest_regions(postprocess_regions(prob, **post))
            for r, region in enumerate(REGIONS):
                row[f"{name}_{region}"] = binary_dice(pred[r], gt[r])
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict:
    out = {}
    for subset in ("all", "adult", "africa"):
        sel = [r for r in rows if subset == "all" or r["source"] == subset]
        out[subset] = {"n": len(sel)}
        for region in REGIONS:
            a = np.array([r[f"base_{region}"] for r in sel])
            b = np.array([r[f"refined_{region}"] for r in sel])
            d = b - a
            out[subset][region] = {"base": float(a.mean()), "refined": float(b.mean()),
                                   "paired": {"mean": float(d.mean()), "ci": list(bootstrap_ci(d)),
                                              "better": int((d > 0.005).sum()), "worse": int((d < -0.005).sum())}}
    return out


def markdown(res: dict) -> str:
    lines = [f"Refiner: {res['epochs']} epochs per fold, {res['minutes']:.1f} wall minutes of training in all; "
             f"post-processing {json.dumps(res['post'])}.", "",
             "| cases | n | region | base | refined | refined - base [95 % CI] | better / worse |", "|---|---|---|---|---|---|---|"]
    for subset, s in res["summary"].items():
        for region in REGIONS:
            r = s[region]
            p = r["paired"]
            lines.append(f"| {subset} | {s['n']} | {region} | {r['base']:.3f} | {r['refined']:.3f} | {p['mean']:+.3f} "
                         f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] | {p['better']} / {p['worse']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a CV run folder with three-view out-of-fold predictions")
    p.add_argument("--pool", default="data_lists/pool60.json", help="the pool datalist the run was scored on")
    p.add_argument("--root", action="append", metavar="NAME=PATH", help="where a pool root is, over the recorded one")
    p.add_argument("--post", required=True, help="postprocessing.json applied with and without the refiner")
    p.add_argument("--work", required=True, help="cache of the half-resolution inputs and the fold refiners")
    p.add_argument("--epochs", type=int, default=12, help="epochs per fold (default 12)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule (default 2e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", default=None, help="comma-separated folds (default: all)")
    p.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    post = json.loads(Path(args.post).read_text())
    work = Path(args.work)
    cases = cache_inputs(args.run, args.pool, parse_roots(args.root), work)
    folds = sorted({c["fold"] for c in cases}) if args.folds is None else [int(f) for f in args.folds.split(",")]
    rows, minutes = [], 0.0
    for fold in folds:
        ckpt = train_fold(cases, fold, work, args.epochs, args.lr, args.seed)
        minutes += float(torch.load(ckpt)["minutes"])
        rows += score_fold(args.run, cases, fold, ckpt, post)
    res = {"run": args.run, "post": post, "epochs": args.epochs, "lr": args.lr, "folds": folds, "minutes": minutes,
           "summary": summarize(rows), "cases": rows}
    print(write_record(res, markdown(res), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
