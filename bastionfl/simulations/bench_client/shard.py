"""The benchmark client's training shard, prepared in a short-lived process of its own so that neither the client
(which must hold only its shard, as a device would) nor the harness carries the whole dataset in memory.

``python -m bastionfl.simulations.bench_client.shard DATASET DATA_DIR CLIENTS OUT.npz``: partition 0 of CLIENTS
(the tasks room's seeded IID split), stored as uint8 images and int64 labels.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["prepare_shard", "model_shape", "package_env"]

CLASSES = 10


def model_shape(in_dim: int, params: int) -> tuple[int, int]:
    """Hidden width of the benchmark's MLP (in_dim -> h -> 10) closest to ``params`` parameters, and its exact count."""
    hidden = max(1, round((params - CLASSES) / (in_dim + 1 + CLASSES)))
    return hidden, in_dim * hidden + hidden + hidden * CLASSES + CLASSES


def package_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that must import this same ``bastionfl`` (its folder first on the path)."""
    import bastionfl

    root = str(Path(bastionfl.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else ""), **(extra or {})}


def _write(dataset: str, data_dir: str, clients: int, out: Path) -> None:
    from bastionfl.config import RunConfig, apply_overrides
    from bastionfl.tasks.registry import build_task

    cfg = apply_overrides(RunConfig(), {"dataset": dataset, "data_dir": data_dir, "num_clients": max(2, clients)})
    task = build_task(cfg)
    task.check_data()
    data = task.client_data(0, clients, clean=True)
    x = np.rint(data.inputs.numpy() * 255.0).clip(0, 255).astype(np.uint8)
    np.savez(out, x=x.reshape(len(x), -1), y=data.labels.numpy().astype(np.int64))


def prepare_shard(dataset: str, data_dir: str, clients: int, out: Path, timeout_s: float = 600) -> Path:
    """Write partition 0 of ``clients`` to ``out`` (reused if it exists); raises ``BenchClientError`` with the
    reason (missing data, say: a user's mistake, reported in one line)."""
    if out.exists():
        return out
    run = subprocess.run([sys.executable, "-m", __name__, dataset, data_dir, str(clients), str(out)],
                         capture_output=True, text=True, timeout=timeout_s, env=package_env())
    if run.returncode != 0 or not out.exists():
        tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
        from .profiles import BenchClientError

        raise BenchClientError(f"preparing the {dataset} shard failed: {tail}")
    return out


if __name__ == "__main__":
    _write(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
