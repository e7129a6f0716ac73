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
    """Start a SuperLink and ``num_nodes`` SuperNodes (insecure, or TLS with ``certs`` = {ca, cert, key}).

    ``node_config`` goes to every node, ``node_configs[i]`` to node ``i`` only (its own credential file, say);
    ``services`` are ``(name, argv, port)`` processes started and waited for before the SuperLink (the HA).
    """

    def __init__(self, workdir: Path, num_nodes: int, *, certs: dict[str, Path] | None = None,
                 node_config: dict[str, str] | None = None, node_configs: list[dict[str, str]] | None = None,
                 services: list[tuple[str, list[str], int]] | None = None, connection: str = "loopback") -> None:
        self.workdir = workdir
        self.num_nodes = num_nodes
        self.certs = certs
        self.node_config = node_config or {}
        self.node_configs = node_configs or [{} for _ in range(num_nodes)]
        if len(self.node_configs) != num_nodes:
            raise ValueError("node_configs needs one entry per node")
        self.services = services or []
        self.connection = connection
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
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
        self.names.append(name)

    def log_of(self, name: str) -> Path:
        """The log file of the process started as ``name`` (superlink, supernode-0, ...)."""
        return self.workdir / f"{name}.log"

    def pids(self) -> dict[str, int]:
        """Every started process by name."""
        return {name: p.pid for name, p in zip(self.names, self.procs)}

    def __enter__(self) -> "LoopbackFederation":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flwr_home.mkdir(exist_ok=True)
        tls = (["--ssl-ca-certfile", str(self.certs["ca"]), "--ssl-certfile", str(self.certs["cert"]),
                "--ssl-keyfile", str(self.certs["key"])] if self.certs else ["--insecure"])
        try:
            for name, argv, port in self.services:
                self._start(name, argv)
                self._wait_port(port)
            self._start("superlink", [_bin("flower-superlink"), *tls, "--host", "127.0.0.1", "--port", str(self.port),
                                      "--database", str(self.workdir / "state.db"),
                                      "--disable-runtime-dependency-installation"])
            self._wait_port(self.port)
            node_tls = ["--root-certificates", str(self.certs["ca"])] if self.certs else ["--insecure"]
            for i in range(self.num_nodes):
                cfg = " ".join([f"partition-id={i}", f"num-partitions={self.num_nodes}"]
                               + [f'{k}="{v}"' for k, v in {**self.node_config, **self.node_configs[i]}.items()])
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
                name = next(n for n, p in zip(self.names, self.procs) if p.poll() is not None)
                raise RuntimeError(f"{name} exited early; see {self.log_of(name)}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{self.names[-1]} did not listen on {port} within {timeout:.0f} s")

    def _write_cli_config(self) -> None:
        lines = ["[superlink]", f'default = "{self.connection}"', "", f"[superlink.{self.connection}]",
                 f'address = "{self.address}"']
        lines.append(f'root-certificates = "{self.certs["ca"]}"' if self.certs else "insecure = true")
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

    @property
    def cli_config(self) -> Path:
        """The ``flwr`` CLI's config.toml holding this deployment's ``[superlink.<connection>]`` entry."""
        return self.flwr_home / "config.toml"

    def run_command(self, app_dir: Path, run_config: str) -> list[str]:
        """The ``flwr run`` command line for ``app_dir`` on this deployment."""
        return [_bin("flwr"), "run", str(app_dir), self.connection, "--stream", "-c", run_config]

    def run_app(self, app_dir: Path, run_config: str, timeout: float = 600.0,
                capture: bool = True) -> subprocess.CompletedProcess[str]:
        """``flwr run APP <connection> --stream -c RUN_CONFIG``; returns the finished process (output captured
        unless ``capture`` is False: then it goes to this process's stdout)."""
        return subprocess.run(self.run_command(app_dir, run_config), capture_output=capture, text=True,
                              env=self.env, timeout=timeout)

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
