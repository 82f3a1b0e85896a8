"""benchmarks/cpu_network_options.py on the shipped bundle's first member, at a tiny size."""

import importlib.util
import json

import pytest

from ..conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location("cpu_network_options", REPO / "benchmarks" / "cpu_network_options.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_options_are_timed_and_give_the_default_logits(tmp_path):
    out = tmp_path / "opts"
    assert _script().main(["--size", "32", "48", "--slices", "4", "--repeats", "1", "--batches", "2,8", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    rows = {r["option"]: r for r in res["rows"]}
    assert list(rows) == ["default", "channels_last", "jit_freeze", "batch_2", "batch_8"]
    assert rows["default"]["ratio_to_default"] == pytest.approx(1.0)
    for r in rows.values():
        assert r["seconds_per_32"] > 0
    # the layouts and the frozen graph compute the same network: logits equal to float rounding
    assert rows["channels_last"]["max_abs_diff"] < 1e-3 and rows["jit_freeze"]["max_abs_diff"] < 1e-3
    assert res["size"] == [32, 48] and res["slices"] == 4
    assert "| jit_freeze |" in out.with_suffix(".md").read_text()
