"""`brainseg3d bench --ablation`: every speed technique is timed on a real case, and each
variant that should give the default's answer does (timings are not asserted)."""

import json

import pytest

from brainseg3d.cli import main

from ..conftest import copy_sample


@pytest.mark.slow
def test_ablation_rows_and_agreement(tmp_path, capsys):
    copy_sample(tmp_path / "cases", "Abl_0")
    out = tmp_path / "ablation.json"
    assert main(["bench", str(tmp_path / "cases"), "--ablation", "--repeats", "1", "--members", "1", "--views", "axial",
                 "--out", str(out)]) == 0
    assert "| variant (one change from the default) |" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert (report["members"], report["views"]) == (1, ["axial"])  # one network: the suite's budget
    rows = {r["variant"]: r for r in report["rows"]}
    default = next(r for name, r in rows.items() if name.startswith("default fp32: brain box"))
    assert default["seconds"] > 0
    # fp32 variants: the same computation, so the same probabilities (up to float reordering)
    for name in ("1 slices per forward pass", "64 slices per forward pass", "torch.no_grad instead of inference_mode",
                 "autograd on (no no_grad / inference_mode)", "TorchScript of the same wrapper (torch.jit.script, fp32)"):
        assert rows[name]["seconds"] > 0 and rows[name]["max_abs_prob_diff"] < 1e-3, name
    assert rows["whole 240x240x155 volume (no brain crop)"]["seconds"] > 0
    onnx = next(r for name, r in rows.items() if name.startswith("ONNX Runtime"))
    # measured (ORT fuses and reorders the float work: a looser bound), or the reason it was not
    assert onnx["note"] or onnx["max_abs_prob_diff"] < 1e-2
