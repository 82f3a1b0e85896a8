"""A picture of chosen out-of-fold cases: ground truth beside the fold model's prediction, on T1c and FLAIR.

For each case, the axial slice with the most ground-truth tumour core is shown four times: T1c, T1c with the
ground truth, T1c with the out-of-fold prediction (the fold model that never saw the case, post-processed as
the record was), FLAIR with the prediction; necrotic core red, edema green, enhancing tumour yellow (the
vocabulary's colours), in radiological convention (patient's right on the left of the picture).

    .venv/bin/python benchmarks/oof_gallery.py RUN CASE [CASE ...] --root extra=EXTRA_DIR \\
        --post bundles/brats_mri_2p5d_segmentation/docs/training/cv_soup_views3r_views/postprocessing.json \\
        --out bundles/brats_mri_2p5d_segmentation/docs/training/cv_soup_views3r_views/gallery.png

RUN: a CV run whose folds hold three-view out-of-fold predictions (``fold<i>/oof_axial+coronal+sagittal/``,
``brainseg3d cv score RUN --views axial,coronal,sagittal``; ``benchmarks/rescore_shipped.sh`` makes them for
the shipped members).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainseg3d.core.labels import LABEL_COLOURS  # noqa: E402
from brainseg3d.data.pool import load_pool, parse_roots  # noqa: E402
from brainseg3d.io import preview_slice  # noqa: E402
from brainseg3d.inference.postprocessing import postprocess_regions  # noqa: E402
from brainseg3d.preprocessing.transforms import RegionsToLabels, preprocessing  # noqa: E402
from brainseg3d.training.cv import load_oof  # noqa: E402


def _rgb(gray: np.ndarray, lab: np.ndarray | None) -> np.ndarray:
    lo, hi = np.percentile(gray, [1, 99.5])
    g = np.clip((gray - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(g[..., None], 3, -1)
    if lab is not None:
        for v, c in LABEL_COLOURS.items():
            m = lab == v
            rgb[m] = 0.45 * rgb[m] + 0.55 * np.asarray(c) / 255.0
    return rgb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--pool", default="data_lists/pool60.json")
    ap.add_argument("--root", action="append", metavar="NAME=PATH")
    ap.add_argument("--post", required=True, help="postprocessing.json of the record")
    ap.add_argument("--out", required=True, help="the PNG")
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    post = json.loads(Path(a.post).read_text())
    items = {it["case"]: it for it in load_pool(a.pool, parse_roots(a.root))}
    oofs = {o["case"]: o for o in load_oof(a.run, "oof_axial+coronal+sagittal", cases=a.cases)}
    missing = [c for c in a.cases if c not in oofs]
    if missing:
        raise SystemExit(f"no out-of-fold prediction in {a.run} for: {', '.join(missing)}")
    chain = preprocessing(["image", "label"], normalize="zscore")
    to_labels = RegionsToLabels(4)  # regions -> the label map the writer makes
    fig = Figure(figsize=(12, 3.1 * len(a.cases)))
    axes = fig.subplots(len(a.cases), 4, squeeze=False)
    for row, case in zip(axes, a.cases):
        img = np.asarray(chain(dict(items[case]))["image"], dtype=np.float32)  # RAS [C, X, Y, Z]
        gt = oofs[case]["label"]
        pred = postprocess_regions(oofs[case]["prob"], **post)
        z = int(np.argmax((gt[1] | gt[2]).sum((0, 1)))) if (gt[1] | gt[2]).any() else int(np.argmax(gt[0].sum((0, 1))))
        view = lambda a2: preview_slice(a2, z)  # noqa: E731  (the previews' radiological convention)
        gl, pl = (view(to_labels(torch.as_tensor(r))[0].numpy()) for r in (gt, pred))
        panels = [(img[1], None, "T1c"), (img[1], gl, "ground truth"), (img[1], pl, "out-of-fold prediction"), (img[3], pl, "FLAIR, prediction")]
        for ax, (im, lab, title) in zip(row, panels):
            ax.imshow(_rgb(view(im), lab))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{case}: {title}" if title == "T1c" else title, fontsize=9)
        row[0].text(2, 8, "R", color="white", fontsize=9)
        row[0].text(view(img[1]).shape[1] - 10, 8, "L", color="white", fontsize=9)
    fig.tight_layout()
    out = Path(a.out)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=55)
    os.replace(tmp, out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
