"""The brainseg3d web demo page (run by ``brainseg3d app``; see :mod:`brainseg3d.app.launch`).

Flow: a case (uploaded NIfTI files, or the shipped sample) -> the bundle's Predictor (cached
once per bundle with ``st.cache_resource``; results cached per session and case, keyed by the
files' hashes) -> the viewer (NiiVue where ``niivue-streamlit`` is installed, else three plain slice
images) with the label / per-region error / uncertainty overlay -> volumes, Dice, quality,
model comparison (with two bundles), downloads.

Uploads are written only into this session's ``tempfile.TemporaryDirectory`` (removed when the
session ends or the server stops). Inference runs in fp32 so that the downloaded mask is the
one ``brainseg3d segment --precision fp32`` writes.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

try:
    import brainseg3d  # noqa: F401
except ImportError:  # run from a source tree that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import nibabel as nib
import numpy as np
import streamlit as st

from brainseg3d.app import core
from brainseg3d.core.cases import MODALITIES, CaseError, discover, load_image
from brainseg3d.inference.predictor import DEFAULT_BUNDLE, Predictor

DATA = (Path(__file__).resolve().parents[1] / "_data").resolve()  # the shipped bundles and sample (package data)
SAMPLE = DATA / "sample_data" / "Brats18_2013_20_1"
#: explicit, so the app's mask equals ``brainseg3d segment --precision fp32``
PRECISION = "fp32"
LABELS = "brats"
UPLOAD = "Upload a case"
SAMPLE_CHOICE = f"Sample case ({SAMPLE.name})"


# ---------------------------------------------------------------------------- shared resources


@st.cache_resource(show_spinner=False)
def get_predictor(bundle: str, precision: str) -> Predictor:
    """One Predictor per bundle for the whole server (the network is loaded once)."""
    return Predictor(bundle, precision=precision, labels=LABELS, register="never", uncertainty=True)


@st.cache_resource(show_spinner=False)
def inference_lock() -> threading.Lock:
    """One inference at a time: two sessions running at once would only share the CPU cores."""
    return threading.Lock()


def session_dir() -> Path:
    """This session's private temporary folder (uploads and downloads live only here)."""
    if "tmpdir" not in st.session_state:
        st.session_state["tmpdir"] = tempfile.TemporaryDirectory(prefix="brainseg3d-app-")
    return Path(st.session_state["tmpdir"].name)


def state(name: str, default):
    if name not in st.session_state:
        st.session_state[name] = default
    return st.session_state[name]


def table(rows) -> None:
    try:
        st.table(rows, hide_index=True)
    except TypeError:  # older Streamlit
        st.table(rows)


def image(col, rgb, caption: str) -> None:
    try:
        col.image(rgb, caption=caption, width="stretch")
    except TypeError:  # older Streamlit
        col.image(rgb, caption=caption, use_container_width=True)


# ---------------------------------------------------------------------------- input


def choose_case():
    """Returns ``(case, image_key, label_key)`` or ``None`` (messages already shown)."""
    choices = [UPLOAD] + ([SAMPLE_CHOICE] if SAMPLE.is_dir() else [])
    source = st.radio("Case", choices, horizontal=True, key="source")
    if source == SAMPLE_CHOICE:
        case = discover(SAMPLE)[0]
        return case, f"sample-{case.case_id}", ("sample-label" if case.label else None)
    max_mb = int(st.get_option("server.maxUploadSize") or core.MAX_UPLOAD_MB)
    files = st.file_uploader(
        f"The four MRI modalities of one case (T1, T1c, T2, FLAIR; any BraTS naming, .nii, .nii.gz, .nrrd or .mha), "
        f"or one 4D NIfTI; optionally its ground truth (*_seg.nii.gz). {max_mb} MB at most in all.",
        accept_multiple_files=True,
        key="uploads",
    )
    if not files:
        st.info(
            "Upload a case to segment it, e.g. `BraTS2021_00006_t1.nii.gz`, `_t1ce`, `_t2`, `_flair` "
            "(BraTS 2023: `-t1n`, `-t1c`, `-t2w`, `-t2f`) and optionally `_seg`, or pick the sample case."
        )
        return None
    # one check (and one write) per set of uploaded files; a rerun (a slider moved) reuses it
    upload_id = tuple(sorted((getattr(f, "file_id", None) or "", f.name, f.size) for f in files))
    seen = state("upload_cache", {})
    if upload_id not in seen:
        seen.clear()
        seen[upload_id] = _prepare_upload(files, max_mb)
    errors, chosen = seen[upload_id]
    for e in errors:
        st.error(e)
    return chosen


def _prepare_upload(files, max_mb: int):
    """``(errors, (case, image_key, label_key) or None)``: classify, hash, write to the session folder, check."""
    plan = core.classify_uploads([(f.name, f.size) for f in files], max_mb)
    if not plan.ok:
        return plan.errors, None
    wanted = set(plan.files())
    data = {core._base(f.name): f.getvalue() for f in files if core._base(f.name) in wanted}
    if plan.image4d:
        image_key = core.case_key([("4d", data[plan.image4d])])
    else:
        image_key = core.case_key([(m, data[n]) for m, n in plan.images.items()])
    label_key = core.case_key([("label", data[plan.label])]) if plan.label else None
    uploads = session_dir() / "uploads"
    if uploads.is_dir():  # the files of earlier cases of this session are not needed any more
        for old in uploads.iterdir():
            if old.name != image_key:
                shutil.rmtree(old, ignore_errors=True)
    case = core.write_uploads(data, plan, uploads / image_key)
    problem = core.case_problem(case)
    if problem:
        return [core.without_paths(problem, session_dir())], None
    return [], (case, image_key, label_key)


# ---------------------------------------------------------------------------- inference


def forget_other_cases(image_key: str) -> None:
    """Keep only the current case's results in memory."""
    if st.session_state.get("active_case") != image_key:
        st.session_state["results"] = {}
        st.session_state["display"] = None
        st.session_state["active_case"] = image_key
        shutil.rmtree(session_dir() / "outputs", ignore_errors=True)


def run_model(case, image_key: str, bundle: Path):
    """Segment ``case`` with ``bundle`` once per session; returns the cached result dict or None."""
    results = state("results", {})
    rk = (image_key, str(bundle))
    if rk in results:
        return results[rk]
    with st.status(f"Segmenting {case.case_id} with {bundle.name} ...", expanded=True) as status:
        bar = status.progress(0.0, text="loading the model")
        try:
            with inference_lock():
                predictor = get_predictor(str(bundle), PRECISION)
                t0 = time.perf_counter()
                bar.progress(0.2, text="reading and preprocessing the images")
                loaded = predictor.load(case)
                bar.progress(0.45, text=f"running the network ({predictor.device}, {predictor.precision})")
                pred = predictor.segment_loaded(loaded)
                seconds = time.perf_counter() - t0
        except CaseError as e:
            status.update(label=f"{bundle.name}: failed", state="error", expanded=True)
            st.error(f"Cannot segment {e.case_id}: {core.without_paths(e.problem, session_dir())}")
            return None
        except Exception as e:  # show, do not crash the page
            status.update(label=f"{bundle.name}: failed", state="error", expanded=True)
            st.error(f"Segmentation failed: {type(e).__name__}: {core.without_paths(str(e), session_dir())}")
            return None
        bar.progress(0.9, text="preparing the views and downloads")
        pred.report["seconds"] = round(seconds, 3)
        out_dir = session_dir() / "outputs" / image_key / bundle.name
        res = {
            "bundle": bundle,
            "label": pred.label,
            "report": pred.report,
            "display": core.display_labels(pred.label),
            "display_affine": nib.as_closest_canonical(pred.label).affine,
            "uncertainty": None if pred.uncertainty is None else core.display_labels(pred.uncertainty),
            "seconds": seconds,
            "mask": core.mask_bytes(pred.label, out_dir, f"{case.case_id}.nii.gz"),
            "scores": {},
        }
        bar.progress(1.0, text="done")
        status.update(label=f"{bundle.name}: segmented {case.case_id} in {seconds:.1f} s", state="complete", expanded=False)
    results[rk] = res
    return res


def scores_for(res: dict, case, label_key: str | None):
    """Dice / HD95 against the case's ground truth (cached per label file)."""
    if case.label is None or label_key is None:
        return None
    if label_key not in res["scores"]:
        from brainseg3d.evaluation.metrics import region_scores

        gt = load_image(case.label)
        try:
            spacing = tuple(float(z) for z in gt.header.get_zooms()[:3])
            s = region_scores(np.asarray(res["label"].dataobj), np.asarray(gt.dataobj), spacing, case.case_id)
        except ValueError as e:
            s = {"error": str(e)}
        res["scores"][label_key] = s
    return res["scores"][label_key]


def display_data(case, image_key: str, label_key: str | None) -> dict:
    disp = st.session_state.get("display")
    if not disp or disp["key"] != image_key:
        mods, zooms = core.display_modalities(case)
        disp = {"key": image_key, "mods": mods, "zooms": zooms, "gt_key": None, "gt": None}
        st.session_state["display"] = disp
    if disp["gt_key"] != label_key:
        disp["gt"] = core.display_labels(load_image(case.label)) if case.label is not None else None
        disp["gt_key"] = label_key
    return disp


# ---------------------------------------------------------------------------- page


#: the two viewers: NiiVue (WebGL, interactive) where its component is installed, and plain images
VIEWERS = {
    "niivue": "Interactive (NiiVue: crosshair, scroll, zoom, window/level, 3D)",
    "slices": "Slices (plain images, no WebGL needed)",
}


def viewer(res: dict, disp: dict, case, image_key: str) -> dict:
    """Viewer, modality, opacity and overlay controls and the views; returns the settings."""
    labels = res["display"]
    gt = disp["gt"]
    shape = labels.shape
    if gt is not None and gt.shape != shape:
        gt = None
        st.warning("The ground truth is not on the mask's grid; the error overlay is off.")
    # the controls live in the sidebar, so that the images start right under the case line
    side = st.sidebar
    side.header("View")
    kinds = list(VIEWERS) if core.niivue_available() else ["slices"]
    kind = side.radio("Viewer", kinds, format_func=VIEWERS.get, key="viewer")
    modality = side.selectbox("Background", list(MODALITIES), index=MODALITIES.index("flair"), format_func=core.MODALITY_TITLES.get, key="modality")
    opacity = side.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="opacity")
    convention = side.radio("Convention", list(core.CONVENTIONS), index=0, key="convention",
                          format_func={"radiological": "radiological (Slicer, ITK-SNAP)", "neurological": "neurological"}.get)
    modes = {"Labels": "labels"}
    if gt is not None:
        modes["Errors vs ground truth"] = "errors"
    if res.get("uncertainty") is not None:
        modes["Uncertainty"] = "uncertainty"
    mode = modes[side.radio("Overlay", list(modes), key="overlay_mode")]
    region = "WT"
    if mode == "errors":
        region = side.radio("Errors of", list(core.REGION_NAMES), horizontal=True, format_func=core.REGION_NAMES.get, key="error_region")
    if gt is None:
        side.caption("Upload the ground truth (*_seg.nii.gz) for Dice and the error overlay.")
    legend = core.legend_html(mode, LABELS, region)
    if mode == "errors":
        err = core.error_counts(labels, gt, res["report"].get("voxel_ml", 0.001), region)
        legend += (f'<div style="font-size:0.85em">{core.REGION_NAMES[region]}: false positives {err["false_positive_ml"]:.2f} ml, '
                   f'false negatives {err["false_negative_ml"]:.2f} ml</div>')
    st.markdown(legend, unsafe_allow_html=True)
    settings = {"modality": modality, "opacity": opacity, "mode": mode, "region": region, "gt": gt, "slices": {}, "viewer": kind}
    if kind == "niivue":
        niivue_view(res, case, image_key, modality, opacity, mode, region, gt, convention)
    else:
        slice_views(res, disp, image_key, modality, opacity, mode, region, gt, convention, settings)
    return settings


def niivue_view(res: dict, case, image_key: str, modality: str, opacity: float, mode: str, region: str, gt, convention: str) -> None:
    """The NiiVue viewer: the modality at its own intensities, the overlay layers in world space."""
    from niivue_component import niivue_viewer

    cache = res.setdefault("niivue", {})
    if cache.get("background", (None,))[0] != modality:
        cache["background"] = (modality, core.niivue_background(case, modality))
    if cache.get("layers", (None,))[0] != (mode, region):  # the volumes; the opacity is only a field
        cache["layers"] = ((mode, region), core.niivue_layers(res["display"], res["display_affine"], mode, gt, region, res.get("uncertainty")))
    data, name = cache["background"][1]
    niivue_viewer(
        nifti_data=data, filename=name, overlays=[{**layer, "opacity": float(opacity)} for layer in cache["layers"][1]], height=680, view_mode="multiplanar", styled=True,
        settings={"crosshair": True, "radiological": convention == "radiological", "interpolation": False, "colorbar": False},
        update_interval_ms=None, key=f"niivue-{image_key}-{modality}-{convention}",
    )
    st.caption(
        "In use: **NiiVue** (WebGL 2), in world coordinates from the files' affines. Click or drag to move the crosshair "
        "(the views are linked), scroll to change slice, right-drag for window / level (double-click resets it); "
        "the menu above the views has zoom, single views and the 3D render. Orientation letters on every view; "
        + ("radiological convention (the patient's right on the screen's left, as Slicer and ITK-SNAP)."
           if convention == "radiological" else "neurological convention (the patient's left on the screen's left).")
        + " A blank viewer means this browser has no WebGL 2: choose 'Slices'."
    )


def slice_views(res: dict, disp: dict, image_key: str, modality: str, opacity: float, mode: str, region: str, gt, convention: str,
                settings: dict) -> None:
    """Three plain images (axial, coronal, sagittal) with a slider each."""
    labels, mods, zooms = res["display"], disp["mods"], disp["zooms"]
    shape = labels.shape
    defaults = state("default_slices", {})
    if image_key not in defaults:
        defaults[image_key] = core.default_slices(labels, shape)
    cols = st.columns(3)
    for col, (view, axis) in zip(cols, core.VIEWS.items()):
        n = shape[axis]
        idx = col.slider(f"{view.capitalize()} slice", 0, n - 1, int(defaults[image_key][view]), key=f"slice-{view}-{image_key}")
        rgb = core.render_overlay(mods[modality], labels, view, idx, opacity, mode, gt, zooms, uncertainty=res.get("uncertainty"),
                                  convention=convention, region=region)
        image(col, rgb, f"{view} {idx} / {n - 1}")
        settings["slices"][view] = idx
    st.caption("In use: plain images. Views: superior / anterior up; " + ("the patient's right on the image's left (radiological convention, as 3D Slicer and ITK-SNAP)"
               if convention == "radiological" else "the patient's left on the image's left (neurological convention)")
               + "; letters on every view: R/L right-left, A/P anterior-posterior, S/I superior-inferior.")


def results_tables(res: dict, scores) -> None:
    c1, c2 = st.columns(2)
    with c1:
        st.subheader("Volumes")
        table(core.volume_rows(res["report"]))
        r = res["report"]
        st.caption(f"{r['model']} {r['model_version']}, {r['precision']} on {r['device']}: {r['seconds']:.1f} s "
                   f"(load {r.get('seconds_load', 0):.1f} s, network {r.get('seconds_inference', 0):.1f} s)")
        for w in r.get("warnings", []):
            st.warning(w)
        quality = r.get("quality")
        if quality:
            st.subheader("Quality estimate")
            table(core.quality_rows(r))
            if quality["review"]:
                st.warning("Check this mask: " + "; ".join(quality["reasons"]))
            else:
                st.caption("Not flagged for review.")
            st.caption("Predicted from the model's hesitation (calibrated on cross-validated cases it never saw); "
                       "the 'Uncertainty' overlay shows where it hesitates.")
    with c2:
        st.subheader("Against the ground truth")
        if scores is None:
            st.caption("No ground truth: upload the case's *_seg.nii.gz with the images to see Dice per region.")
        elif "error" in scores:
            st.error(f"Cannot score against this ground truth: {scores['error']}")
        else:
            table(core.score_rows(scores))
            st.caption("Dice and 95th-percentile Hausdorff distance (MONAI) per BraTS region.")


def downloads(res: dict, case, scores) -> None:
    st.subheader("Downloads")
    report = dict(res["report"])
    if scores and "error" not in scores:
        report["ground_truth_scores"] = scores
    ctbl = state("ctbl", None) or core.colour_table_bytes(session_dir(), LABELS)
    st.session_state["ctbl"] = ctbl
    c1, c2, c3 = st.columns(3)
    c1.download_button("Download mask (.nii.gz)", res["mask"], file_name=f"{case.case_id}.nii.gz", mime="application/gzip", on_click="ignore", key="dl-mask")
    c2.download_button("Download report (.json)", core.report_bytes(report), file_name=f"{case.case_id}.json", mime="application/json", on_click="ignore", key="dl-report")
    c3.download_button("Download colour table (.ctbl)", ctbl, file_name=f"brats_colours_{LABELS}.ctbl", mime="text/plain", on_click="ignore", key="dl-ctbl")
    st.caption("The mask is uint8 on the input's exact grid (labels 1 necrotic core, 2 edema, 4 enhancing tumour); "
               "load the colour table with it in 3D Slicer.")


def compare(bundles: list[Path], primary: Path, res: dict, case, image_key: str, label_key, disp: dict, settings: dict) -> None:
    others = [b for b in bundles if b != primary]
    if not others:  # shown only when there is something to compare (BRAINSEG3D_BUNDLES adds bundles)
        return
    st.subheader("Compare models")
    names = {str(b): f"{b.name} ({b.parent.name})" for b in bundles}
    chosen = st.multiselect("Run these bundles on the same case too", [str(b) for b in others], format_func=names.get, key="compare")
    if not chosen:
        return
    runs = [res] + [r for r in (run_model(case, image_key, Path(b)) for b in chosen) if r is not None]
    view = "axial"
    idx = settings["slices"].get(view, core.default_slices(res["display"], res["display"].shape)[view])  # NiiVue: the tumour's centre
    cols = st.columns(len(runs))
    rows = []
    for col, r in zip(cols, runs):
        rgb = core.render_overlay(disp["mods"][settings["modality"]], r["display"], view, idx, settings["opacity"],
                                  settings["mode"], settings["gt"], disp["zooms"], region=settings["region"])
        image(col, rgb, f"{r['bundle'].name}: {r['seconds']:.1f} s")
        row = {"model": r["bundle"].name, "folder": str(r["bundle"].parent), "seconds": f"{r['seconds']:.1f}",
               "network (s)": f"{r['report'].get('seconds_inference', 0):.1f}"}
        vols = r["report"]["volumes"]
        row.update({f"{k} (ml)": f"{vols[v]:.2f}" for k, v in (("WT", "whole_tumour_ml"), ("TC", "tumour_core_ml"), ("ET", "enhancing_tumour_ml"))})
        sc = scores_for(r, case, label_key)
        if sc and "error" not in sc:
            row.update({f"Dice {k}": f"{sc[f'Dice_{k}']:.3f}" for k in ("WT", "TC", "ET")})
        rows.append(row)
    table(rows)


def main() -> None:
    st.set_page_config(page_title="brainseg3d: brain tumour segmentation", layout="wide")
    st.title("brainseg3d: brain tumour segmentation")
    st.warning(f"**{core.DISCLAIMER}** Not for diagnosis or treatment decisions.")
    bundles = core.find_bundles(DATA / "bundles", os.environ.get("BRAINSEG3D_BUNDLES"))
    default = DEFAULT_BUNDLE.resolve()
    if default not in bundles and (default / "configs" / "inference.json").is_file():
        bundles.insert(0, default)
    if not bundles:
        st.error("No model bundle found (bundles/<name>/configs/inference.json + models/model.pt).")
        return
    primary = default if default in bundles else bundles[0]
    if len(bundles) > 1:
        primary = Path(st.selectbox("Model", [str(b) for b in bundles], index=bundles.index(primary), format_func=lambda b: Path(b).name, key="model"))

    chosen = choose_case()
    if chosen is None:
        return
    case, image_key, label_key = chosen
    forget_other_cases(image_key)
    st.caption(f"Case **{case.case_id}**" + (" with ground truth" if case.label is not None else ""))
    with st.expander("Files used", expanded=False):
        table(core.assignment_rows(case))
    res = run_model(case, image_key, primary)
    if res is None:
        return
    disp = display_data(case, image_key, label_key)
    if disp["mods"]["flair"].shape != res["display"].shape:
        st.error(f"internal error: mask {res['display'].shape} and image {disp['mods']['flair'].shape} differ in shape")
        return
    scores = scores_for(res, case, label_key)
    settings = viewer(res, disp, case, image_key)
    results_tables(res, scores)
    downloads(res, case, scores)
    compare(bundles, primary, res, case, image_key, label_key, disp, settings)
    with st.expander("Report (JSON)"):
        st.json(res["report"])


main()
