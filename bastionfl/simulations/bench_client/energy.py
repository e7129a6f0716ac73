"""The energy and speed MODEL of the client benchmark: a projection from measured CPU seconds, not a measurement.

This machine under limits: the measured seconds; energy at the reference core's power per busy core.
Projected on the device: CPU seconds x the ARM cost factor (reference single-core score / device score); energy =
those CPU seconds x the device's power per busy core above idle; the round's computing time = those CPU seconds /
the cores it keeps busy (torch threads, at most the profile's cores), assuming the device does nothing else and
leaving out waits for the network and the server; average power while computing = idle + busy cores x power per
core (wall time measured here is not used: on a shared machine it includes waiting for a CPU). Memory is projected as the measured peak minus the GPU libraries' resident pages (this
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
    busy = max(1, min(profile.cores or profile.soc_cores, profile.torch_threads))
    dev_wall = dev_cpu / busy
    dev_energy = dev_cpu * profile.dyn_w_per_core
    avg_power = profile.idle_w + busy * profile.dyn_w_per_core
    return {
        "is_a_model": True,
        "this_machine_under_limits": {
            "cpu_s": cpu_s, "wall_s": wall_s,
            "energy_j_above_idle": cpu_s * ref.dyn_w_per_core,
            "power_per_busy_core_w": ref.dyn_w_per_core, "power_source": ref.power_source,
        },
        "projected_on_device": {
            "device": profile.description,
            "cpu_s": dev_cpu, "computing_s": dev_wall, "busy_cores": busy,
            "energy_j_above_idle": dev_energy,
            "energy_j_with_idle": dev_energy + profile.idle_w * dev_wall,
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
            "note": "the paper reports its device's measured average power; this is the model's board idle + busy "
                    "cores while the client computes: a comparison of order of magnitude, not a check",
        },
    }
