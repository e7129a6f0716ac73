"""The harness of ``bastionfl bench client``: start the simulated server and the limited client, watch the client,
and turn what happened — figures, an out-of-memory kill, a timeout — into one result.

The harness itself does no measured work: it prepares the shard (a throw-away process), starts the server process
(pinned away from the client's CPUs where the machine has any), starts the client inside the profile's limits,
reads the client's stage events and samples its RSS every 50 ms so that a kill can be placed in a stage and at a size.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bastionfl.client.memory_guard import EXIT_OUT_OF_MEMORY, process_memory_mb

from .energy import energy_model
from .limits import MODES, Enforcer
from .profiles import BenchClientError, get_device_profile
from .scratch import remove_scratch
from .shard import model_shape, package_env, prepare_shard

__all__ = ["BenchOptions", "STAGES", "run_client_bench", "HE_CHOICES"]

STAGES = ("admission", "key_setup", "train", "encrypt", "decrypt_share")
HE_STAGES = ("key_setup", "decrypt_share")
HE_CHOICES = ("none", "lean", "precise", "lean-n8192")
_IN_DIMS = {"digits": 64, "fashion-mnist": 784, "mnist": 784, "cifar10": 3072}
_counter = 0


@dataclass
class BenchOptions:
    """What one client benchmark runs: device profile, model size, HE profile, federation size and the details."""

    profile: str = "rpi4-class"
    params: int = 1_000_000
    he: str = "lean"
    clients: int = 30
    dataset: str = "digits"
    data_dir: str = ""
    steps: int = 20
    batch_size: int = 32
    lr: float = 0.05
    seed: int = 0
    enforce: str = "auto"
    verify: str = "auto"
    stage_timeout_s: float = 900.0
    memory_mb: int | None = None  # overrides the profile's cap (0: none), e.g. for sweeps that draw the caps
    profiles_file: Path | None = None
    shard_dir: Path | None = None  # reuse prepared shards (sweeps)

    def check(self) -> None:
        """Refuse impossible options with one line (``BenchClientError``)."""
        if self.he not in HE_CHOICES:
            raise BenchClientError(f"--he must be one of {', '.join(HE_CHOICES)}, got {self.he!r}")
        if self.enforce not in MODES:
            raise BenchClientError(f"--enforce must be one of {', '.join(MODES)}, got {self.enforce!r}")
        if self.dataset not in _IN_DIMS:
            raise BenchClientError(f"--dataset must be one of {', '.join(_IN_DIMS)}, got {self.dataset!r}")
        if self.params < 100 or self.params > 200_000_000:
            raise BenchClientError("--params must be between 100 and 200,000,000")
        if not 2 <= self.clients <= 100_000:
            raise BenchClientError("--clients must be between 2 and 100,000")
        if self.steps < 1 or self.batch_size < 1 or self.stage_timeout_s <= 0:
            raise BenchClientError("--steps, --batch-size and --stage-timeout must be positive")
        if self.verify not in ("auto", "yes", "no"):
            raise BenchClientError("--verify must be auto, yes or no")


def _not_run(reason: str, ok: bool) -> dict[str, Any]:
    return {"ran": False, "ok": ok, "reason": reason, "wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0,
            "bytes_up": 0, "bytes_down": 0}


class _Watch:
    """The client's events and RSS samples while it runs."""

    def __init__(self, proc: subprocess.Popen, fd: int, stage_timeout_s: float,
                 on_baseline: Callable[[dict[str, Any]], None]) -> None:
        self.proc, self.fd, self.timeout, self.on_baseline = proc, fd, stage_timeout_s, on_baseline
        self.events: list[dict[str, Any]] = []
        self.current: str | None = None
        self.started = 0.0
        self.last_rss = self.max_rss = 0.0
        self.cpu_s = self.stage_cpu0 = 0.0
        self.ended = 0.0
        self.timed_out: str | None = None
        self._buf = b""
        self._open = True

    def _read(self, block_s: float) -> None:
        if not self._open:
            time.sleep(block_s)
            return
        ready, _, _ = select.select([self.fd], [], [], block_s)
        if not ready:
            return
        data = os.read(self.fd, 1 << 16)
        if not data:
            self._open = False
            return
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if line.strip():
                ev = json.loads(line)
                self.events.append(ev)
                if ev.get("event") == "stage_start":
                    self.current, self.started, self.stage_cpu0 = ev["stage"], time.monotonic(), self.cpu_s
                elif ev.get("event") == "stage_end":
                    self.current = None
                elif ev.get("event") == "baseline":
                    self.on_baseline(ev)

    def run(self, progress: Callable[[str], None]) -> None:
        while True:
            self._read(0.05)
            rss = process_memory_mb(self.proc.pid)["rss"]
            if rss > 0:
                self.last_rss, self.max_rss = rss, max(self.max_rss, rss)
            self.cpu_s = _cpu_seconds(self.proc.pid, self.cpu_s)
            if self.proc.poll() is not None:
                self.ended = time.monotonic()
                while self._open:
                    self._read(0.05)
                return
            if self.current and time.monotonic() - self.started > self.timeout and self.timed_out is None:
                self.timed_out = self.current
                progress(f"stage {self.current} passed {self.timeout:.0f} s: killing the client")
                self.proc.send_signal(signal.SIGKILL)


def _cpu_seconds(pid: int, last: float) -> float:
    """User + system CPU seconds of a live process (``last`` if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return last


def _go(baseline: dict[str, Any], enforcer: Enforcer, go_w: int) -> None:
    """After the client's imports: fit the cgroup cap to its RSS, then let the round start."""
    enforcer.charge_shared_pages(float(baseline["rss_mb"]))
    try:
        os.write(go_w, b"g")
    except OSError:
        pass


def _failure(watch: _Watch, rc: int, enforcer: Enforcer, stderr_tail: str) -> tuple[str, dict[str, Any]] | None:
    """Where the client stopped early and why: (stage, figures) or None if it finished."""
    stage = watch.current
    oom = next((e for e in watch.events if e.get("event") == "oom"), None)
    if oom is not None:
        return oom["stage"], {"error": "out_of_memory", "detail": f"allocation failed ({oom['error']}); the "
                              "memory guard reported it and ended the process", "rss_at_failure_mb": oom["rss_mb"],
                              "peak_rss_mb": oom["peak_rss_mb"], "vm_at_failure_mb": oom["vm_mb"],
                              "exit": EXIT_OUT_OF_MEMORY}
    if rc == 0 or stage is None:
        return None
    figures: dict[str, Any] = {"rss_at_failure_mb": watch.last_rss, "peak_rss_mb": watch.max_rss, "exit": rc,
                               "wall_s": watch.ended - watch.started, "cpu_s": watch.cpu_s - watch.stage_cpu0,
                               "partial": "wall and CPU until the process ended (sampled every 50 ms); peak RSS "
                                          "is the largest RSS sampled"}
    mem = enforcer.memory_events()
    if watch.timed_out:
        figures.update(error="timeout", detail=f"still running after {watch.timeout:.0f} s; killed")
    elif rc == -signal.SIGKILL and mem.get("oom_kills", 0) + mem.get("limit_hits", 0) > 0:
        figures.update(error="out_of_memory", detail="killed by the kernel's OOM killer at the cgroup memory limit "
                       f"(cgroup peak {mem.get('peak_mb') or 0:.0f} MB, {mem.get('oom_kills', 0)} OOM kills)")
    else:
        figures.update(error="crashed", detail=f"exit status {rc}: {stderr_tail}")
    return stage, figures


def _stages(watch: _Watch, he: str, failure: tuple[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    ends = {e["stage"]: e for e in watch.events if e.get("event") == "stage_end"}
    out: dict[str, dict[str, Any]] = {}
    failed_at = failure[0] if failure else next((s for s, e in ends.items() if not e["ok"]), None)
    for name in STAGES:
        if he == "none" and name in HE_STAGES:
            out[name] = _not_run("no HE: plaintext FedAvg has no key setup and no decryption share", True)
        elif name in ends:
            e = ends[name]
            out[name] = {"ran": True, **{k: e[k] for k in ("ok", "wall_s", "cpu_s", "peak_rss_mb", "bytes_up",
                                                           "bytes_down", "wait_s")}}
            if e.get("error"):
                out[name]["error"] = e["error"]
        elif failure is not None and name == failure[0]:
            out[name] = {"ran": True, "ok": False, "wall_s": None, "cpu_s": None, "bytes_up": None,
                         "bytes_down": None, **failure[1]}
            out[name].pop("exit", None)
        else:
            out[name] = _not_run(f"not reached: the round stopped at {failed_at}", False)
    return out


def _totals(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ran = [s for s in stages.values() if s["ran"]]
    return {
        "ok": all(s["ok"] for s in stages.values()),
        "wall_s": sum(s["wall_s"] or 0.0 for s in ran), "cpu_s": sum(s["cpu_s"] or 0.0 for s in ran),
        "peak_rss_mb": max((s.get("peak_rss_mb") or 0.0 for s in ran), default=0.0),
        "bytes_up": sum(s["bytes_up"] or 0 for s in ran), "bytes_down": sum(s["bytes_down"] or 0 for s in ran),
    }


def _spawn_server(opts: dict[str, Any], sock: socket.socket, cpus: list[int], work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bastionfl.simulations.bench_client.server_proc", json.dumps(opts)],
        pass_fds=[sock.fileno()], env=package_env(), stdout=subprocess.PIPE,
        stderr=open(work / "server.err", "w"), text=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )


def run_client_bench(opts: BenchOptions, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run one client round under the profile's limits and return every figure (see docs/benchmarks.md)."""
    global _counter
    opts.check()
    profile, ref = get_device_profile(opts.profile, opts.profiles_file)
    if opts.memory_mb is not None:
        profile = dataclasses.replace(profile, memory_mb=opts.memory_mb)
    hidden, exact = model_shape(_IN_DIMS[opts.dataset], opts.params)
    verify = opts.verify == "yes" or (opts.verify == "auto" and opts.he != "none" and opts.clients <= 30
                                      and exact <= 2_000_000)
    _counter += 1
    enforcer = Enforcer(profile, opts.enforce)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bastionfl-bench-client-") as tmp:
        work = Path(tmp)
        shard_dir = opts.shard_dir or work
        progress(f"preparing the {opts.dataset} shard (partition 0 of {opts.clients})")
        shard = prepare_shard(opts.dataset, opts.data_dir, opts.clients,
                              shard_dir / f"shard-{opts.dataset}-{opts.clients}-{opts.seed}.npz")
        import numpy as np

        with np.load(shard) as z:
            examples = int(len(z["y"]))
        enforcer.prepare(f"{os.getpid()}-{_counter}")
        server_sock, client_sock = socket.socketpair()
        server = _spawn_server({"he": opts.he, "clients": opts.clients, "length": exact, "seed": opts.seed,
                                "verify": verify, "sock_fd": server_sock.fileno(), "workdir": str(work),
                                "examples": examples, "session": f"bench-client-{opts.seed}",
                                "update_file": str(work / "update.npy")},
                               server_sock, enforcer.other_cpus, work)
        try:
            assert server.stdout is not None
            ready = json.loads(server.stdout.readline() or "{}")
            if ready.get("event") != "ready":
                err = (work / "server.err").read_text()[-300:]
                raise BenchClientError(f"the simulated server did not start: {err}")
            events_r, events_w = os.pipe()
            go_r, go_w = os.pipe()
            copts = {"he": opts.he, "hidden": hidden, "shard": str(shard), "credential": ready["credential"],
                     "torch_threads": profile.torch_threads, "steps": opts.steps, "batch_size": opts.batch_size,
                     "lr": opts.lr, "seed": opts.seed,
                     "sock_fd": client_sock.fileno(), "events_fd": events_w,
                     "go_fd": go_r,
                     "as_cap_mb": enforcer.as_cap_mb, "stage_deadline_s": opts.stage_timeout_s + 30,
                     "update_file": str(work / "update.npy") if verify else ""}
            progress(f"client: profile {profile.name}, {exact:,} parameters, HE {opts.he}, {opts.clients} clients")
            client = subprocess.Popen(
                [sys.executable, "-m", "bastionfl.simulations.bench_client.client_proc", json.dumps(copts)],
                pass_fds=[client_sock.fileno(), events_w, go_r], env=package_env(enforcer.child_env()),
                stdout=subprocess.DEVNULL, stderr=open(work / "client.err", "w"), preexec_fn=enforcer.join)
            os.close(events_w)
            os.close(go_r)
            client_sock.close()
            server_sock.close()
            watch = _Watch(client, events_r, opts.stage_timeout_s, on_baseline=lambda ev: _go(ev, enforcer, go_w))
            watch.run(progress)
            os.close(events_r)
            os.close(go_w)
            rc = client.returncode
            scratch = sorted({e["scratch_dir"] for e in watch.events if e.get("scratch_dir")})
            for path in scratch:
                remove_scratch(path)  # a killed client could not remove its own
            tail = ((work / "client.err").read_text(errors="replace").strip().splitlines() or [""])[-1][:300]
            failure = _failure(watch, rc, enforcer, tail)
            try:
                out, _ = server.communicate(timeout=opts.stage_timeout_s)
            except subprocess.TimeoutExpired:
                server.kill()
                out, _ = server.communicate()
            summary = next((json.loads(line) for line in out.splitlines() if '"summary"' in line), {})
            summary.pop("event", None)
            if summary.get("scratch_dir"):
                scratch.append(summary.pop("scratch_dir"))
            mem_events = enforcer.memory_events()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            enforcer.cleanup()
    stages = _stages(watch, opts.he, failure)
    totals = _totals(stages)
    base = next((e for e in watch.events if e.get("event") == "baseline"), {})
    base.pop("event", None)
    cuda_mb = float(base.get("cuda_libs_rss_mb") or 0.0)
    return {
        "benchmark": "bastionfl bench client",
        "profile": dataclasses.asdict(profile),
        "options": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()},
                    "verify": verify},
        "model": {"kind": "MLP", "input": _IN_DIMS[opts.dataset], "hidden": hidden, "params": exact},
        "limits": [r.to_dict() for r in enforcer.results],
        "cgroup_memory": mem_events,
        "baseline": base,
        "stages": stages,
        "totals": totals,
        "stopped": None if failure is None else {"stage": failure[0], **failure[1]},
        "energy": energy_model(profile, ref, totals["cpu_s"], totals["wall_s"], totals["peak_rss_mb"], cuda_mb),
        "server": summary,
        "harness": {"client_exit": rc, "client_max_rss_sampled_mb": watch.max_rss,
                    "scratch_dirs": len(scratch), "scratch_dirs_left": [p for p in scratch if os.path.exists(p)],
                    "stage_peak_is_per_stage": bool(next((e for e in watch.events if e.get("event") == "done"),
                                                         {}).get("peak_resets", False))},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu": _cpu_model(),
                    "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
