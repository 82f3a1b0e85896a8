"""The benchmark command runs both pipelines end to end and reports what it promises
(timings are not asserted: speed targets live in the benchmark docs, not in unit tests)."""

import json

import pytest
import torch

from brainseg3d.cli import main
from brainseg3d.networks import bf16_supported

from ..conftest import REPO, copy_sample


@pytest.mark.slow
def test_bench_smoke(tmp_path, capsys):
    src = tmp_path / "cases"
    for i in range(2):
        copy_sample(src, f"Bench_{i}")
    out = tmp_path / "bench.json"
    # one member, one view, fp32: the plumbing is what is tested, in the suite's budget (bf16 is
    # emulated, and slow, on a CPU without it)
    rc = main(["bench", str(src), "--n", "1", "--pipelines", "reference,ours-bf16+m1+axial,ours-fp32+m1+axial+nofh,ours-fp32+m1+axial",
               "--memory-batch", "3", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| reference |" in text and "| ours-fp32+m1+axial |" in text and "batch of 3 cases:" in text and "cases/s" in text
    report = json.loads(out.read_text())
    ref, bf16, nofh, ours = report["results"]
    # +nofh: the same pipeline without the core hole filling (its cost); the others apply the bundle's setting
    shipped = json.loads((REPO / "bundles" / "brats_mri_2p5d_segmentation" / "configs" / "inference.json").read_text())
    assert nofh["postprocessing"]["fill_core_holes"] is False and nofh["median_s"] > 0
    assert ours["postprocessing"]["fill_core_holes"] is shipped["fill_core_holes"]
    # bf16 runs where the CPU has it; elsewhere (emulated, several times slower) the row says why not
    if bf16_supported(torch.device("cpu")):
        assert bf16["median_s"] > 0 and not bf16.get("note")
    else:
        assert bf16["median_s"] is None and "no native bfloat16" in bf16["note"] and f"ours-bf16+m1+axial: {bf16['note']}" in text
    assert ref["n"] == ours["n"] == 1 and ref["median_s"] > 0 and ours["median_s"] > 0
    assert ours["speedup_vs_reference"] > 0 and ours["peak_rss_mb"] > 0
    # the stage times, from the case report: reading and inference each a part of the end-to-end time
    assert ours["median_seconds_load"] > 0 and ours["median_seconds_inference"] > 0
    assert ours["median_seconds_load"] + ours["median_seconds_inference"] <= ours["median_s"]  # one case: the stages do not overlap
    assert "| load s | inference s |" in text
    assert 0.0 <= ours["Dice_WT"] <= 1.0  # the sample case has ground truth
    mem = ours["memory_batch"]
    assert mem["cases"] == mem["ok"] == 3 and mem["cases_per_s"] > 0 and len(mem["rss_mb_trace"]) == 20
