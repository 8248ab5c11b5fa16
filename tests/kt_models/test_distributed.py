"""Data-parallel training: two gloo processes under torchrun end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from kt_models.train import TrainConfig, train
    data, out = sys.argv[1], sys.argv[2]
    cfg = TrainConfig(epochs=2, patience=5, batch_tokens=2048, seed=3, threads=1)
    r = train("dkt", data, out, config=cfg, progress=False, log=lambda s: None)
    torch.save(r["model"].state_dict(), f"{out}/rank{r['rank']}_of_{r['world_size']}.pt")
    """
)


def test_two_gloo_processes_end_with_identical_weights(skill_dataset, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=0",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=127.0.0.1:0",
        str(script),
        str(skill_dataset),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    w0 = torch.load(out / "rank0_of_2.pt")
    w1 = torch.load(out / "rank1_of_2.pt")
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0)
    # rank 0 alone wrote the run directory
    assert (out / "best.pt").is_file() and (out / "metrics.jsonl").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert Path(out / "run.json").read_text().count('"world_size": 2') == 1
