"""The benchmarked client: one real round in a process of its own, under the limits the harness put on it.

Stages, in order: ``admission`` (pseudonym handshake), ``key_setup`` (K1-K3: key share, signed key sketch, the
aggregated key checked), ``train`` (local SGD on its shard), ``encrypt`` (the update under the aggregated key with
its signed commitment, or float32 without HE), ``decrypt_share`` (D1: check the proposal, sign the transcript with
a sketch of the own c1; D2: check every member's signature and that the sketches sum to C1's, one smudged share).
The crypto steps are the protocol engine's under the default threat model (``malicious``), as ``client/secure.py``
runs them. Each stage's wall time covers everything from the moment the server's message is there (parsing
included) to the reply being sent, minus the time spent waiting for the server; CPU time is the process's; peak
RSS is the stage's own high-water mark (``/proc/self/clear_refs``). Every stage runs inside
:func:`bastionfl.client.memory_guard.memory_guard`: an allocation failure is reported and ends the process.

Run by the harness: ``python -m bastionfl.simulations.bench_client.client_proc '<json options>'``; it reports JSON
lines on the file descriptor named in the options.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bastionfl.client.memory_guard import OutOfMemoryReport, memory_guard, process_memory_mb, report_json

from .scratch import remove_scratch, seal_scratch_dir

EXIT_STAGE_FAILED = 3
_CUDA_HINTS = ("cuda", "cublas", "cudnn", "cufft", "curand", "cusolver", "cusparse", "nccl", "nvrtc", "nvjitlink",
               "cupti", "nvtoolsext", "triton")


def _cuda_libs_rss_mb() -> float:
    """Resident pages of GPU libraries mapped by this process (a CPU-only build on a device has none of them)."""
    total, current = 0, ""
    try:
        with open("/proc/self/smaps") as fh:
            for line in fh:
                if "-" in line.split(" ", 1)[0] and ":" not in line.split(" ", 1)[0]:
                    parts = line.split()
                    current = parts[5].lower() if len(parts) > 5 else ""
                elif line.startswith("Rss:") and any(h in current.rsplit("/", 1)[-1] for h in _CUDA_HINTS):
                    total += int(line.split()[1])
    except OSError:
        return 0.0
    return total / 1024


class Events:
    """JSON lines to the harness (stage starts and ends, the baseline, an out-of-memory report)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, obj: dict[str, Any]) -> None:
        os.write(self.fd, (json.dumps(obj) + "\n").encode())

    def oom(self, report: OutOfMemoryReport) -> None:
        os.write(self.fd, (report_json(report) + "\n").encode())


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Client:
    """The client's state across stages, and the stage meter."""

    def __init__(self, opts: dict[str, Any], events: Events) -> None:
        from .channel import Channel

        self.opts = opts
        self.events = events
        self.ch = Channel(socket.socket(fileno=int(opts["sock_fd"])))
        self.he = str(opts["he"])
        self.peak_resets = True

    def stage(self, name: str, body: Callable[[], None]) -> None:
        """Run one stage body under the memory guard and report its figures (the report too: an allocation that
        fails while reporting is the stage's out-of-memory, not a crash)."""
        ch = self.ch
        error = None
        with memory_guard(name, on_oom=self.events.oom, deadline_s=self.opts.get("stage_deadline_s")):
            self.peak_resets = _reset_peak() and self.peak_resets
            up, down, wait = ch.up, ch.down, ch.wait_s
            self.events.send({"event": "stage_start", "stage": name, "rss_mb": process_memory_mb()["rss"]})
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                body()
            except MemoryError:
                raise  # the guard reports it and ends the process before anything is freed
            except Exception as exc:  # noqa: BLE001 - any failure of the stage is its reported result
                if _allocation_failed(exc):
                    raise MemoryError(f"{type(exc).__name__}: {exc}"[:300]) from None
                error = f"{type(exc).__name__}: {exc}"[:400]
            mem = process_memory_mb()
            self.events.send({
                "event": "stage_end", "stage": name, "ok": error is None, "error": error,
                "wall_s": time.perf_counter() - t0 - (ch.wait_s - wait), "cpu_s": time.process_time() - c0,
                "peak_rss_mb": mem["peak"], "rss_end_mb": mem["rss"], "bytes_up": ch.up - up,
                "bytes_down": ch.down - down, "wait_s": ch.wait_s - wait, "scratch_dir": seal_scratch_dir(),
            })
        if error is not None:
            remove_scratch(seal_scratch_dir())
            os._exit(EXIT_STAGE_FAILED)  # the round cannot go on; exiting also skips freeing SEAL objects


def _allocation_failed(exc: Exception) -> bool:
    """An allocation failure that a library reports as another error (torch's CPU allocator: RuntimeError)."""
    from bastionfl.client.memory_guard import is_allocation_failure

    return is_allocation_failure(exc)


def _startup(opts: dict[str, Any], events: Events) -> dict[str, Any]:
    """Imports and data loading, as a ClientApp process does before its first message (not a stage)."""
    t0, c0 = time.perf_counter(), time.process_time()
    import numpy as np
    import torch

    import flwr.app  # noqa: F401 - a real client runs inside Flower's ClientApp: its memory belongs to the baseline
    from bastionfl.crypto import Params  # noqa: F401 - loads TenSEAL's SEAL bindings

    torch.set_num_threads(int(opts["torch_threads"]))
    shard = np.load(opts["shard"])
    x, y = torch.from_numpy(shard["x"]), torch.from_numpy(shard["y"])
    in_dim, hidden = x.shape[1], int(opts["hidden"])
    torch.manual_seed(int(opts["seed"]))
    model = torch.nn.Sequential(torch.nn.Linear(in_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    mem = process_memory_mb()
    as_cap = int(opts.get("as_cap_mb") or 0)
    if as_cap:  # the RLIMIT_AS fallback: room for `as_cap` MB more resident memory than now, beyond the mappings
        limit = int((mem["vm"] + as_cap - mem["rss"]) * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    base = {"event": "baseline", "startup_s": time.perf_counter() - t0, "startup_cpu_s": time.process_time() - c0,
            "rss_mb": mem["rss"], "peak_rss_mb": mem["peak"], "vm_mb": mem["vm"],
            "cuda_libs_rss_mb": _cuda_libs_rss_mb(), "examples": int(len(y)),
            "model_params": sum(p.numel() for p in model.parameters()),
            "rlimit_as_mb": None if not as_cap else limit / 2**20, "torch_threads": torch.get_num_threads(),
            "cpus": sorted(os.sched_getaffinity(0))}
    events.send(base)
    os.read(int(opts["go_fd"]), 1)  # the harness adjusts the limits to the baseline, then lets the round start
    return {"model": model, "x": x, "y": y}


def main(opts: dict[str, Any]) -> None:
    """One round: admission, key setup, train, encrypt, decrypt share."""
    events = Events(int(opts["events_fd"]))
    with memory_guard("startup", on_oom=events.oom):
        state = _startup(opts, events)
    client = Client(opts, events)
    import numpy as np
    import torch

    from . import he_adapter as he
    from bastionfl.auth import AuthClient, FileCredentialStore, RoundContext

    ch = client.ch
    held: dict[str, Any] = {}

    def admission() -> None:
        info = ch.recv_json("auth.start")
        auth = AuthClient(FileCredentialStore(Path(opts["credential"])))
        ctx = RoundContext(int(info["run_id"]), int(info["epoch"]), int(info["node_id"]), int(info["expiry"]))
        ch.send("auth.msg1", auth.start(str(info["server_id"]), ctx))
        ch.send("auth.msg3", auth.respond(bytes(ch.recv("auth.msg2")[1])))
        outcome = auth.finish(bytes(ch.recv("auth.msg4")[1]))
        ch.send("auth.ack", outcome.ack)
        if outcome.session is None or not ch.recv_json("auth.result").get("admitted"):
            raise RuntimeError("admission refused")

    def key_setup() -> None:
        members = int(ch.recv_json("key.info")["members"])
        side = he.ClientSide(he.params_of(client.he), members)
        ch.send("key.reply", side.open(ch.recv("key.opening")[1]))
        ch.send("key.response", side.key_proposal(ch.recv("key.proposal")[1]))
        side.key_confirmation(ch.recv("key.confirm")[1])
        held.update(side=side)

    def train() -> None:
        cfg = ch.recv_json("train.config")
        w0 = np.frombuffer(ch.recv("train.global")[1], dtype=np.float32).copy()
        model, x, y = state["model"], state["x"], state["y"]
        torch.nn.utils.vector_to_parameters(torch.from_numpy(w0), model.parameters())
        opt = torch.optim.SGD(model.parameters(), lr=float(opts["lr"]), momentum=0.9)
        gen = torch.Generator().manual_seed(int(opts["seed"]))
        model.train()
        for _ in range(int(opts["steps"])):
            idx = torch.randint(0, len(y), (int(opts["batch_size"]),), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(x[idx].float() / 255.0), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        del opt
        new = torch.nn.utils.parameters_to_vector(model.parameters()).detach().numpy().astype(np.float64)
        held["weight"] = len(y) / float(cfg["weight_norm"])
        held["update"] = (new - w0) * held["weight"]

    def encrypt() -> None:
        update = held.pop("update")
        if client.he == "none":
            ch.send("update", update.astype(np.float32).tobytes())
        else:
            blob = held["side"].upload(1, update, held["weight"])
            ch.send("update", blob)
            del blob
        if opts.get("update_file"):
            held["update_copy"] = update  # written after the stage, for the harness's round check

    def decrypt_share() -> None:
        side = held["side"]
        ch.send("decrypt.sign", side.sign(ch.recv("decrypt.proposal")[1]))
        ch.send("decrypt.share", side.share(ch.recv("decrypt.confirm")[1]))

    client.stage("admission", admission)
    if client.he != "none":
        client.stage("key_setup", key_setup)
    client.stage("train", train)
    client.stage("encrypt", encrypt)
    if "update_copy" in held:
        np.save(opts["update_file"], held.pop("update_copy"))
    if client.he != "none":
        client.stage("decrypt_share", decrypt_share)
    events.send({"event": "done", "peak_resets": client.peak_resets, "cuda_libs_rss_mb": _cuda_libs_rss_mb()})
    remove_scratch(seal_scratch_dir())
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown: nothing left to measure, and SEAL objects need not be freed one by one


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
