"""``bastionfl bench rounds``: per-round time and bytes of the same federation in several modes, side by side.

A mode is ``none``, ``xmkckks`` or ``xmkckks/<threat model>`` (``xmkckks/malicious``). Each mode runs the same
seeded federation, on the Simulation Engine in this process or (``deployment``) as a real SuperLink and SuperNodes
on 127.0.0.1 driven by ``flwr run``, where every message exchange costs a SuperNode poll; the first mode listed is
the baseline, and every other mode is reported as a ratio to it, measured in the same invocation.

Memory (simulation only): ``memory.server_process_peak_rss_mb`` is this process's peak RSS during the mode, which
holds the ServerApp together with the engine that hands messages to the client actors and the loaded data set;
``memory.descendants_peak_rss_mb`` is the sampled peak of the summed RSS of the client actors and Ray's services.
``machine.loadavg_1m_range`` (simulation only) is the lowest and highest 1-minute load average sampled meanwhile.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bastionfl.config import RunConfig, apply_overrides
from bastionfl.simulations.proc_memory import MemoryWatch

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


def _per_client_stage_bytes(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean bytes per client and round of each stage, down (server to client) and up."""
    samples: dict[str, dict[str, list[int]]] = {}
    for r in rounds:
        for per_node in r.get("client_bytes", {}).values():
            for stage, b in per_node.get("stages", {}).items():
                for way in ("down", "up"):
                    samples.setdefault(stage, {"down": [], "up": []})[way].append(int(b[way]))
    return {stage: {way: statistics.mean(v) for way, v in ways.items() if v} for stage, ways in sorted(samples.items())}


ROUND_FIGURES = ("round", "time_s", "stages", "restarts", "reproposals", "key_epoch", "epoch_members", "threshold",
                 "uploaders", "shares_used", "decrypt_attempts", "dropouts", "skipped")  # what every round's line keeps


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
        "stage_bytes_per_client": _per_client_stage_bytes(rounds),
        "per_round": [{k: r[k] for k in ROUND_FIGURES if k in r} for r in rounds],
    }


def mode_overrides(mode: str) -> dict[str, str]:
    """``none`` | ``xmkckks`` | ``xmkckks/<threat model>`` as configuration overrides."""
    aggregation, _, threat = mode.partition("/")
    values = {"secure_aggregation": aggregation}
    if threat:
        values["threat_model"] = threat
    return values


def _run_config(cfg: RunConfig, out_dir: Path) -> str:
    """The non-default settings of ``cfg`` as ``flwr run -c`` (dashed keys, TOML values)."""
    defaults = RunConfig().flat()
    items = []
    for key, value in cfg.flat().items():
        if key == "out_dir" or value == defaults[key]:
            continue
        name = "num-server-rounds" if key == "rounds" else key.replace("_", "-")
        text = ("true" if value else "false") if isinstance(value, bool) else (
            f"'{value}'" if isinstance(value, str) else repr(value))
        items.append(f"{name}={text}")
    items.append(f"out-dir='{out_dir}'")
    return " ".join(items)


def run_deployed(cfg: RunConfig, out_dir: Path, timeout: float = 1800.0) -> list[dict[str, Any]]:
    """The federation as a real deployment on loopback: a SuperLink, ``num_clients`` SuperNodes, ``flwr run``."""
    import bastionfl
    from bastionfl.deploy.loopback import LoopbackFederation
    from bastionfl.server.report import read_metrics

    app = Path(bastionfl.__file__).resolve().parents[1]
    if not (app / "pyproject.toml").is_file():
        raise FileNotFoundError(f"{app}: the deployment benchmark runs the app from a source checkout")
    with tempfile.TemporaryDirectory(prefix="bastionfl-bench-") as tmp:
        fed = LoopbackFederation(Path(tmp), cfg.federation.num_clients)
        with fed:
            proc = fed.run_app(app, _run_config(cfg, out_dir), timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"flwr run failed: {(proc.stderr or proc.stdout)[-500:]}")
    return list(read_metrics(out_dir)["rounds"])


def run_rounds_bench(base: RunConfig, modes: list[str], progress: Callable[[str], None] = print, *,
                     deployment: bool = False) -> dict[str, Any]:
    """Run the same federation once per mode; the first mode is the baseline of the ratios."""
    from bastionfl.simulations.simulate import run_simulated

    results: dict[str, Any] = {"config": base.to_dict(), "engine": "deployment" if deployment else "simulation",
                               "modes": {}}
    for mode in modes:
        cfg = apply_overrides(base, mode_overrides(mode))
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            if deployment:
                rounds, memory, load = run_deployed(cfg, Path(tmp)), None, None
            else:
                with MemoryWatch() as watch:  # the run folder is the simulation's out_dir (pseudonym admission)
                    rounds = run_simulated(apply_overrides(cfg, {"out_dir": tmp}), Path(tmp))
                memory, load = watch.figures(), watch.load_range()
            summary = summarise(rounds)
            summary["wall_s"] = time.perf_counter() - start
            summary["memory"] = memory
            summary["machine"] = {"cpus": os.cpu_count(), "loadavg_1m_range": load}
        results["modes"][mode] = summary
        peak = "" if memory is None or memory["server_process_peak_rss_mb"] is None else \
            f", server process peak RSS {memory['server_process_peak_rss_mb']:.0f} MB"
        progress(f"{mode}: steady round {summary['round_s_steady']:.2f} s, accuracy {summary['final_accuracy']:.4f}"
                 + peak)
    baseline = results["modes"][modes[0]]
    results["ratios_vs_" + modes[0]] = {
        m: {"round_s_steady": r["round_s_steady"] / baseline["round_s_steady"],
            "bytes_up": r["bytes_up_per_round"] / baseline["bytes_up_per_round"],
            "bytes_down": r["bytes_down_per_round"] / baseline["bytes_down_per_round"]}
        for m, r in results["modes"].items() if m != modes[0]
    }
    return results
