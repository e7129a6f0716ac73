"""``bastionfl bench client``: what one secure round costs a constrained client, measured under enforced limits.

One real client round (admission, key setup, local training, encryption, decryption share) runs in a process of its
own under a device profile (``devices.toml``: cores, torch threads, memory cap, power and speed figures), against a
server simulated in another process. The harness reports per stage wall and CPU seconds, peak RSS and bytes each
way, which mechanism enforced each limit, an out-of-memory kill as a result (stage and size), and an energy model.
"""

from .profiles import BenchClientError, DeviceProfile, get_device_profile, load_profiles
from .runner import HE_CHOICES, STAGES, BenchOptions, run_client_bench

__all__ = ["BenchClientError", "BenchOptions", "DeviceProfile", "HE_CHOICES", "STAGES", "get_device_profile",
           "load_profiles", "run_client_bench"]
