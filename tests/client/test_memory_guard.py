"""The memory guard: an allocation failure inside SEAL under a memory cap ends the client within seconds, with a
report naming the stage — where without the guard the process spins forever once it frees the failed stage."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from bastionfl.simulations.bench_client.shard import package_env

from bastionfl.client.memory_guard import (
    EXIT_OUT_OF_MEMORY,
    StageOutOfMemory,
    check_memory_budget,
    memory_available_mb,
)

# A client under RLIMIT_AS (what `prlimit --as` sets) that encrypts 300k-float updates until SEAL cannot allocate.
_CHILD = textwrap.dedent("""
    import resource, sys, time
    import numpy as np
    from bastionfl import crypto as xc
    from bastionfl.client.memory_guard import memory_guard, process_memory_mb

    params = xc.get_profile("lean")
    crs = xc.CrsSeed.from_session("guard-test", 0)
    key = xc.KeyShare.generate(params, crs)
    apk = xc.AggregatedPublicKey.aggregate(params, crs, [key.public_share()])
    cap = int((process_memory_mb()["vm"] + 80) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    kept = []
    def stage():
        for _ in range(400):
            kept.append(xc.encrypt_vector(apk, np.zeros(300_000)))
    if sys.argv[1] == "guarded":
        reported = lambda report: print("REPORTED", time.monotonic(), flush=True)
        with memory_guard("encrypt", on_oom=reported):
            stage()
    else:
        try:
            stage()
        except MemoryError:
            print("allocation failed; freeing the stage's ciphertexts", flush=True)
            kept.clear()  # what unwinding a failed stage does: SEAL's locked pool spins here
            print("freed", flush=True)
""")


def _child(mode: str, timeout: float) -> tuple[int | None, float, str, str]:
    """Run the child; the exit code (None if it had to be killed), the monotonic time it ended, its output."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=package_env())
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, time.monotonic(), out, err
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return None, time.monotonic(), out, err


def test_allocation_failure_in_seal_exits_within_seconds_with_the_stage_named():
    rc, ended, out, err = _child("guarded", timeout=180)
    assert rc == EXIT_OUT_OF_MEMORY, err[-500:]
    assert "out of memory in stage encrypt" in err
    assert "bad_alloc" in err or "MemoryError" in err or "4294967232" in err  # zstd: ZSTD_error_memory_allocation
    reported = float(next(line for line in out.splitlines() if line.startswith("REPORTED")).split()[1])
    assert ended - reported < 5.0  # from the failure's report to the process being gone (milliseconds in practice)


@pytest.mark.slow
def test_without_the_guard_freeing_after_the_failure_hangs():
    """The hazard the guard exists for: after SEAL's failed allocation, freeing its objects never returns."""
    rc, _, out, _ = _child("unguarded", timeout=25)
    assert "allocation failed" in out
    assert rc is None and "freed" not in out, "freeing after a SEAL allocation failure returned: the hazard is gone"


def test_deadline_ends_a_stage_stuck_while_holding_the_gil():
    code = textwrap.dedent("""
        from bastionfl.client.memory_guard import memory_guard
        with memory_guard("decrypt_share", deadline_s=1.0):
            sum(range(10**13))  # a C loop that never releases the GIL, like a spinning SEAL call
    """)
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=package_env())
    assert run.returncode == 1 and "Timeout" in run.stderr
    assert time.monotonic() - start < 30


def test_budget_check_refuses_before_allocating():
    free = memory_available_mb()
    assert 0 < free < float("inf")
    check_memory_budget("encrypt", 1.0)
    with pytest.raises(StageOutOfMemory, match="stage encrypt needs about"):
        check_memory_budget("encrypt", free * 4 + 1e6)


def test_budget_check_sees_an_address_space_cap():
    code = textwrap.dedent("""
        import resource
        from bastionfl.client.memory_guard import StageOutOfMemory, check_memory_budget, process_memory_mb
        cap = int((process_memory_mb()["vm"] + 100) * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        check_memory_budget("train", 50)
        try:
            check_memory_budget("train", 150)
        except StageOutOfMemory as exc:
            print("refused:", exc)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=package_env())
    assert run.returncode == 0, run.stderr[-400:]
    assert "refused: stage train needs about 150 MB" in run.stdout


# The real client's path: ``client/secure.py``'s guard around the engine's upload, in a process that is a ClientApp's
# own (as Flower's ``flwr-clientapp`` runs one message), under an address-space cap.
_CLIENT_APP = textwrap.dedent("""
    import resource, sys
    sys.argv[0] = "/usr/bin/flwr-clientapp"
    import numpy as np
    from bastionfl import crypto as xc
    from bastionfl.client.memory_guard import process_memory_mb
    from bastionfl.client.secure import guarded, owns_process

    params = xc.get_profile("lean")
    policy = xc.ClientPolicy(min_members=2, min_uploads=2)
    server, opening = xc.ServerEpoch.open(params, "malicious", "guard-test", 0)
    members = [xc.ClientEpoch.open(params, opening, policy) for _ in range(2)]
    for _, reply in members:
        server.add_key_reply(reply)
    proposal = server.proposal()
    for epoch, _ in members:
        server.add_key_response(epoch.on_key_proposal(proposal))
    confirmation = server.confirmation()
    for epoch, _ in members:
        epoch.on_key_confirmation(confirmation)
    epoch = members[0][0]
    assert owns_process()
    cap = int((process_memory_mb()["vm"] + 80) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    kept = []
    with guarded("encrypt"):
        for r in range(400):
            kept.append(epoch.upload(r, np.zeros(300_000), 1.0, keep_own_c1=False))
    print("not reached", flush=True)
""")


def test_client_app_upload_out_of_memory_exits_with_the_stage_named():
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-c", _CLIENT_APP], capture_output=True, text=True, timeout=180,
                         env=package_env())
    assert run.returncode == EXIT_OUT_OF_MEMORY, run.stderr[-500:]
    assert "out of memory in stage encrypt" in run.stderr and "not reached" not in run.stdout
    assert time.monotonic() - start < 120


def test_guard_refuses_a_step_that_cannot_fit_and_raises_outside_a_client_app_process():
    from bastionfl.client.secure import guarded, owns_process

    assert not owns_process()  # the test runner: a simulation-like process that hosts more than one node
    with pytest.raises(StageOutOfMemory, match="stage encrypt needs about"):
        with guarded("encrypt", need_mb=memory_available_mb() * 4 + 1e6):
            pass
    with pytest.raises(MemoryError):
        with guarded("decrypt_share"):
            raise MemoryError("simulated")
