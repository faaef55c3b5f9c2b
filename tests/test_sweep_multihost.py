"""Two processes on loopback run one sweep together through ``jax.distributed`` and produce
the same merged results as one process, bit for bit.

Each process forces 2 CPU devices; the 3 runs are 3 programs of one run each, shared out
over the processes (process 0 takes groups 0 and 2, process 1 group 1). Each process trains
its groups on its own devices, writes its slice, and after a barrier process 0 merges the
slices into ``summary.json``. Every subprocess has a timeout, so a hang fails this test only.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from minirl import cli

pytestmark = pytest.mark.timeout(420)

ARGS = [
    "sweep", "dqn", "--env", "CartPole-v1", "--grid", "lr=1e-3,3e-4,1e-4", "--seeds", "1",
    "--steps", "1000", "--chunks", "2", "--set", "hidden=16", "--set", "buffer_size=500",
    "--set", "learning_starts=200", "--set", "batch_size=16", "--runs-per-program", "1",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_merge_to_the_single_process_sweep(tmp_path):
    multi, single = tmp_path / "multi", tmp_path / "single"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    env.pop("JAX_PLATFORMS", None)
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "minirl", *ARGS, "--out", str(multi),
             "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]

    # The reference: the same command in one process on one device.
    assert cli.main([*ARGS, "--out", str(single), "--devices", "1"]) == 0

    slices = [json.loads((multi / f"slice-{p:04d}.json").read_text()) for p in range(2)]
    assert [s["process_count"] for s in slices] == [2, 2]
    assert [s["rows"] for s in slices] == [[0, 2], [1]]
    merged = json.loads((multi / "summary.json").read_text())
    reference = json.loads((single / "summary.json").read_text())
    assert merged["processes"] == 2 and merged["devices"] == 4
    assert reference["processes"] == 1 and reference["devices"] == 1
    for key in ("swept", "ranking", "steps", "seeds", "runs"):
        assert merged[key] == reference[key], key
    for m, r in zip(merged["configurations"], reference["configurations"]):
        assert m["values"] == r["values"]
        assert m["final_returns"] == r["final_returns"]  # exactly: the same programs ran
    assert (multi / "sweep.png").exists()
    assert "ranked by median final return" in outputs[0]  # the table, from process 0 only
    assert "ranked by median final return" not in outputs[1]
