"""The energy and speed MODEL of the client benchmark: a projection from measured CPU seconds, not a measurement.

This machine under limits: the measured seconds; energy at the reference core's power per busy core.
Projected on the device: CPU seconds x the ARM cost factor (reference single-core score / device score); energy =
those CPU seconds x the device's power per busy core above idle; average power over the round = idle + energy /
projected wall time. Memory is projected as the measured peak minus the GPU libraries' resident pages (this
machine's torch is a CUDA build; a device's CPU-only build has none), an estimate that keeps everything else.
"""

from __future__ import annotations

from typing import Any

from .profiles import DeviceProfile, Reference

__all__ = ["energy_model"]


def energy_model(
    profile: DeviceProfile, ref: Reference, cpu_s: float, wall_s: float, peak_rss_mb: float, cuda_libs_mb: float
) -> dict[str, Any]:
    """Both views of one round (totals over its stages), with the assumptions spelled out."""
    factor = ref.cpu_score / profile.cpu_score
    dev_cpu = cpu_s * factor
    # a CPU-bound round stretches by the same factor; waits for the network or server are not part of wall_s
    dev_wall = wall_s * factor
    dev_energy = dev_cpu * profile.dyn_w_per_core
    avg_power = profile.idle_w + (dev_energy / dev_wall if dev_wall > 0 else 0.0)
    return {
        "is_a_model": True,
        "this_machine_under_limits": {
            "cpu_s": cpu_s, "wall_s": wall_s,
            "energy_j_above_idle": cpu_s * ref.dyn_w_per_core,
            "power_per_busy_core_w": ref.dyn_w_per_core, "power_source": ref.power_source,
        },
        "projected_on_device": {
            "device": profile.description,
            "cpu_s": dev_cpu, "wall_s": dev_wall,
            "energy_j_above_idle": dev_energy,
            "average_power_w": avg_power,
            "power_per_busy_core_w": profile.dyn_w_per_core,
            "idle_w": profile.idle_w, "load_w": profile.load_w, "soc_cores": profile.soc_cores,
            "power_source": profile.power_source,
            "peak_rss_mb": max(0.0, peak_rss_mb - cuda_libs_mb),
            "peak_rss_note": f"measured peak minus {cuda_libs_mb:.0f} MB of GPU-library pages (CUDA build of torch "
                             "here, CPU-only on the device); an estimate",
        },
        "arm_cost_factor": factor,
        "arm_cost_assumption": f"reference single-core score {ref.cpu_score:g} ({ref.score_source}) / device "
                               f"{profile.cpu_score:g} ({profile.score_source}); single-core general-purpose "
                               "scores, not SEAL's NTT: an assumption",
        "paper_comparison": {
            "paper_average_power_w": ref.paper_avg_power_w, "paper": ref.paper,
            "model_average_power_w": avg_power,
            "note": "the paper reports measured average power of its device; this is the model's idle + "
                    "CPU-driven power over the projected round, for the same order of magnitude, not a check",
        },
    }
