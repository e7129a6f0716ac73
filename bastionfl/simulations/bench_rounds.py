"""``bastionfl bench rounds``: per-round time and bytes of the same federation in several modes, side by side.

Each mode runs the same seeded federation on the Simulation Engine in this process; the first mode listed is the
baseline, and every other mode is reported as a ratio to it, measured in the same invocation.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bastionfl.config import RunConfig, apply_overrides

__all__ = ["run_rounds_bench", "summarise"]


def _client_seconds(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Mean per-client seconds of each timed client step (training, HE encryption, key generation, share)."""
    samples: dict[str, list[float]] = {}
    for r in rounds:
        for per_node in r.get("client_metrics", {}).values():
            for key, value in per_node.items():
                if key.endswith("_s"):
                    samples.setdefault(key, []).append(value)
    return {k: statistics.mean(v) for k, v in sorted(samples.items())}


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Round-time and byte figures of one run; steady state excludes round 1 (engine start-up, key epoch)."""
    steady = rounds[1:] or rounds
    stage_names = sorted({k for r in rounds for k in r["stages"]})
    return {
        "rounds": len(rounds),
        "final_accuracy": rounds[-1]["accuracy"],
        "round1_s": rounds[0]["time_s"],
        "round_s_steady": statistics.mean(r["time_s"] for r in steady),
        "stage_s_steady": {s: statistics.mean(r["stages"].get(s, 0.0) for r in steady) for s in stage_names},
        "bytes_up_per_round": statistics.mean(r["bytes_up"] for r in rounds),
        "bytes_down_per_round": statistics.mean(r["bytes_down"] for r in rounds),
        "client_seconds": _client_seconds(steady),
    }


def run_rounds_bench(base: RunConfig, modes: list[str], progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the same federation once per secure-aggregation mode; the first mode is the baseline of the ratios."""
    from bastionfl.simulations.simulate import run_simulated

    results: dict[str, Any] = {"config": base.to_dict(), "modes": {}}
    for mode in modes:
        cfg = apply_overrides(base, {"secure_aggregation": mode})
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            rounds = run_simulated(cfg, Path(tmp))
            summary = summarise(rounds)
            summary["wall_s"] = time.perf_counter() - start
        results["modes"][mode] = summary
        progress(f"{mode}: steady round {summary['round_s_steady']:.2f} s, accuracy {summary['final_accuracy']:.4f}")
    baseline = results["modes"][modes[0]]
    results["ratios_vs_" + modes[0]] = {
        m: {"round_s_steady": r["round_s_steady"] / baseline["round_s_steady"],
            "bytes_up": r["bytes_up_per_round"] / baseline["bytes_up_per_round"],
            "bytes_down": r["bytes_down_per_round"] / baseline["bytes_down_per_round"]}
        for m, r in results["modes"].items() if m != modes[0]
    }
    return results
