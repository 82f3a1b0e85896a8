"""Scale-out: DDP training under torchrun (gloo on CPU) and sharded batch inference."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from brainseg3d.cli import main, parse_shard
from brainseg3d.data.datalist import make_datalist, write_datalist

from ..conftest import BRATS2018, REPO, copy_sample

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_ddp_train_two_cpu_processes(shared, tmp_path):
    doc = make_datalist(BRATS2018, seed=0)
    doc["training"], doc["validation"], doc["testing"] = doc["validation"][:1], doc["validation"][1:3], []
    dl = write_datalist(doc, tmp_path / "tiny.json")
    out = tmp_path / "ddp"
    cmd = TORCHRUN + ["-m", "brainseg3d", "train", str(REPO / "configs" / "unet25d.yaml"), "--output", str(out),
                      "--max-steps", "2", "--quiet", "--device", "cpu", "--set", f"data#datalist={dl}", "--set", "data#patch=[64, 64]",
                      "--set", "train#batch_size=2", "--set", "train#val_interval=1"]
    res = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)  # printed once, by rank 0
    assert summary["world_size"] == 2 and summary["iterations"] == 2
    assert len(summary["validation_cases"]) == 2 and summary["best_val_dice"] is not None
    # same checkpoint format as a single-process run: the bare network state dict + training state
    best = torch.load(out / "best_model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in best)
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert set(ckpt) >= {"network", "optimizer", "lr_scheduler", "trainer"}
    assert set(ckpt["network"]) == set(best)


def test_parse_shard(monkeypatch):
    assert parse_shard("1/3") == (1, 3)
    with pytest.raises(ValueError):
        parse_shard("3/3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert parse_shard(None) == (2, 4)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert parse_shard(None) is None


@pytest.mark.slow
def test_sharded_inference_matches_single_process(tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        copy_sample(src, f"Shard_{i}")
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main(["segment", str(src), str(single), "--quiet", "--precision", "fp32", "--views", "axial", "--members", "1"]) == 0
    cmd = TORCHRUN + ["-m", "brainseg3d", "segment", str(src), str(sharded), "--quiet", "--precision", "fp32", "--views", "axial", "--members", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    shards = [json.loads(p.read_text()) for p in sorted(sharded.glob("summary.shard-*.json"))]
    per_rank = [{c["case_id"] for c in s["cases"]} for s in shards]
    assert len(per_rank) == 2 and not (per_rank[0] & per_rank[1]) and per_rank[0] | per_rank[1] == {f"Shard_{i}" for i in range(3)}
    assert main(["merge", str(sharded)]) == 0
    merged = json.loads((sharded / "summary.json").read_text())
    assert merged["ok"] == 3 and merged["shards"] == 2
    for i in range(3):
        a = nib.load(str(single / f"Shard_{i}.nii.gz"))
        b = nib.load(str(sharded / f"Shard_{i}.nii.gz"))
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        assert np.array_equal(a.affine, b.affine)
