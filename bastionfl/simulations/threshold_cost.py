"""Library-level cost of t-of-n key setup (one process, simulated members): what one member deals and receives,
how long its dealing takes, and what the server holds while it forwards the boxes.

``python -m bastionfl.simulations.threshold_cost --members 10 100 1000`` prints one line per size. Dealing (Shamir
evaluation and sealing) is timed on one member (every member does the same work). Byte figures are exact from the
box size; above 100 recipients the dealing is timed on 100 and scaled (linear in recipients and in t). ``deal_s`` is
wall-clock time, ``deal_cpu_s`` the CPU time of this process (every thread), steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import math
import time

from bastionfl.crypto import get_profile
from bastionfl.crypto.shamir import deal, uniform_mod
from bastionfl.crypto.threshold import ExchangeKey, ThresholdRule, box_context, seal_box
from bastionfl.crypto.threshold_messages import box_bytes

MEASURED_LIMIT = 100  # recipients actually dealt to; above, the time is scaled linearly


def cost(members: int, fraction: float = 0.6, profile: str = "lean") -> dict[str, float]:
    """One member's dealing and combining cost, and the server's forwarding memory, for ``members``."""
    params = get_profile(profile)
    t = ThresholdRule.parse(fraction).threshold_for(members)
    rows = uniform_mod((len(params.data_primes), params.poly_modulus_degree), params.data_primes)  # a stand-in
    # secret of the right shape: the cost does not depend on its values
    measured = min(members, MEASURED_LIMIT)
    own, peer = ExchangeKey.generate(), ExchangeKey.generate()
    t_measured = min(t, ThresholdRule.parse(fraction).threshold_for(measured))
    deal(rows[:, :8], params.data_primes, [0, 1], 1)  # one-off imports and set-up stay out of the timing
    start, cpu = time.perf_counter(), time.process_time()
    shares = deal(rows, params.data_primes, list(range(measured)), t_measured)
    for k in range(1, measured):
        box_key = own.box_key(peer.public, b"t" * 32, 0, k)
        seal_box(box_key, box_context(b"t" * 32, 0, k), shares[k].tobytes())
    scale = (members / measured) * (t / t_measured)  # the evaluation is linear in recipients x t
    deal_s = (time.perf_counter() - start) * scale
    deal_cpu_s = (time.process_time() - cpu) * scale
    box = box_bytes(params)
    return {"members": members, "t": t, "c_max": min(t - 1, 2 * t - members - 1),
            "deal_bytes_per_member": (members - 1) * box, "receive_bytes_per_member": (members - 1) * box,
            "deal_s": deal_s, "deal_cpu_s": deal_cpu_s,
            "server_forwarding_bytes": members * (members - 1) * box,
            "decrypt_share_bytes": 8 * len(params.data_primes) * params.poly_modulus_degree * math.ceil(
                100_000 / params.floats_per_ciphertext)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--profile", default="lean")
    args = ap.parse_args()
    print("members  t  c_max  deal/member  receive/member  deal_s  deal_cpu_s  server_forwarding  share(100k floats)")
    for n in args.members:
        c = cost(n, args.threshold, args.profile)
        print(f"{n:7d} {c['t']:4d} {c['c_max']:5d} {c['deal_bytes_per_member'] / 1e6:9.1f} MB "
              f"{c['receive_bytes_per_member'] / 1e6:11.1f} MB {c['deal_s']:7.2f} {c['deal_cpu_s']:10.2f} "
              f"{c['server_forwarding_bytes'] / 1e9:12.2f} GB {c['decrypt_share_bytes'] / 1e6:9.2f} MB")


if __name__ == "__main__":
    main()
