"""Two-process DDP on CPU (gloo, via torchrun) follows the same loss trajectory as one process with the same global
batch. (The faster in-process check that splitting a batch changes nothing is
``test_train.py::test_accumulation_does_not_change_the_trajectory``.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _fakes import install, tiny_config
from uvlm.train.loop import train
from uvlm.train.metrics import read_metrics

TESTS = Path(__file__).parent


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None and
                    shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_two_process_ddp_matches_one_process(tmp_path, monkeypatch):
    install(monkeypatch)
    cfg = tiny_config("SigLIP-VQ", steps=4, batch=8)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(TESTS / "_fakes.py"),
                           str(tmp_path / "cfg.json"), str(tmp_path / "ddp")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = read_metrics(tmp_path / "ddp/metrics.jsonl", "train")
    # really two processes (a plain Accelerator() under torchrun would run two independent single-process jobs)
    assert [r["world_size"] for r in ddp] == [2, 2, 2, 2]
    state = json.loads((tmp_path / "ddp/checkpoints/step-000004/state.json").read_text())
    assert state["world_size"] == 2
    rng = torch.load(tmp_path / "ddp/checkpoints/step-000004/rng.pt", weights_only=True)
    assert rng["world_size"] == 2 and len(rng["states"]) == 2

    one = train(cfg, tmp_path / "one", quiet=True)
    assert [r["loss"] for r in ddp] == pytest.approx(one.losses, rel=0, abs=1e-5)
    single = read_metrics(tmp_path / "one/metrics.jsonl", "train")
    for a, b in zip(ddp, single):
        for k in ("understanding_samples", "generation_samples", "text_tokens", "image_tokens"):
            assert a[k] == b[k], k
