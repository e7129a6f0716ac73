"""A real Flower deployment on one machine: SuperLink + N SuperNodes as processes on 127.0.0.1.

Used by the deployment tests and for trying multi-node topologies without containers. Every process is
started by us and stopped by its PID (TERM, then KILL) when the context exits, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType

__all__ = ["LoopbackFederation", "free_port"]


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (bound and released; good enough for tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH (install flwr)")
    return found


class LoopbackFederation(AbstractContextManager["LoopbackFederation"]):
    """Start a SuperLink and ``num_nodes`` SuperNodes (insecure, or TLS with ``certs`` = {ca, cert, key})."""

    def __init__(self, workdir: Path, num_nodes: int, *, certs: dict[str, Path] | None = None,
                 node_config: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.num_nodes = num_nodes
        self.certs = certs
        self.node_config = node_config or {}
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.flwr_home = workdir / "flwr-home"
        self.env = dict(os.environ, FLWR_HOME=str(self.flwr_home), FLWR_TELEMETRY_ENABLED="0",
                        FLWR_DISABLE_UPDATE_CHECK="1", FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
                        PYTHONUNBUFFERED="1",
                        # the SuperLink and SuperNodes start flower-superexec by name: find ours first
                        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           cwd=self.workdir, start_new_session=True))

    def __enter__(self) -> "LoopbackFederation":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flwr_home.mkdir(exist_ok=True)
        tls = (["--ssl-ca-certfile", str(self.certs["ca"]), "--ssl-certfile", str(self.certs["cert"]),
                "--ssl-keyfile", str(self.certs["key"])] if self.certs else ["--insecure"])
        try:
            self._start("superlink", [_bin("flower-superlink"), *tls, "--host", "127.0.0.1", "--port", str(self.port),
                                      "--database", str(self.workdir / "state.db"),
                                      "--disable-runtime-dependency-installation"])
            self._wait_port(self.port)
            node_tls = ["--root-certificates", str(self.certs["ca"])] if self.certs else ["--insecure"]
            for i in range(self.num_nodes):
                cfg = " ".join([f"partition-id={i}", f"num-partitions={self.num_nodes}"]
                               + [f'{k}="{v}"' for k, v in self.node_config.items()])
                self._start(f"supernode-{i}", [_bin("flower-supernode"), *node_tls, "--superlink", self.address,
                                               "--port", str(free_port()), "--node-config", cfg])
            self._write_cli_config()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_port(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a Flower process exited early; see logs in {self.workdir}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"SuperLink did not listen on {port} within {timeout:.0f} s")

    def _write_cli_config(self) -> None:
        lines = ["[superlink]", 'default = "loopback"', "", "[superlink.loopback]", f'address = "{self.address}"']
        lines.append(f'root-certificates = "{self.certs["ca"]}"' if self.certs else "insecure = true")
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

    def run_app(self, app_dir: Path, run_config: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """``flwr run APP loopback --stream -c RUN_CONFIG``; returns the finished process (output captured)."""
        return subprocess.run([_bin("flwr"), "run", str(app_dir), "loopback", "--stream", "-c", run_config],
                              capture_output=True, text=True, env=self.env, timeout=timeout)

    def stop(self) -> None:
        """TERM every started process group, then KILL what is left after 10 s."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
