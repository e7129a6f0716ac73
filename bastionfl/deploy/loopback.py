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

__all__ = ["LoopbackFederation", "free_port", "make_supernode_key"]


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
    each node gets ``state-dir = <workdir>/node-state/node-<i>`` unless they name one (a node refuses a malicious
    threat model without it);
    ``services`` are ``(name, argv, port)`` processes started and waited for before the SuperLink (the HA).
    Multi-host tests put processes elsewhere: ``prefix[name]`` is prepended to that process's command line (and to
    ``flwr run`` under the name ``flwr``), the SuperLink binds ``superlink_host``, and node ``i`` dials
    ``node_addresses[i]``. With ``supernode_keys`` (one OpenSSH P-384 private key file per node, ``.pub`` beside it)
    Flower's SuperNode authentication is on: the keys are registered with ``flwr supernode register`` before the
    nodes start (static keys: the SuperLink can link a node across rounds and runs).
    """

    def __init__(self, workdir: Path, num_nodes: int, *, certs: dict[str, Path] | None = None,
                 node_config: dict[str, str] | None = None, node_configs: list[dict[str, str]] | None = None,
                 services: list[tuple[str, list[str], int]] | None = None, connection: str = "loopback",
                 prefix: dict[str, list[str]] | None = None, superlink_host: str = "127.0.0.1",
                 node_addresses: list[str] | None = None, supernode_keys: list[Path] | None = None) -> None:
        self.workdir = workdir
        self.num_nodes = num_nodes
        self.certs = certs
        self.node_config = node_config or {}
        self.node_configs = node_configs or [{} for _ in range(num_nodes)]
        if len(self.node_configs) != num_nodes:
            raise ValueError("node_configs needs one entry per node")
        self.services = services or []
        self.connection = connection
        self.prefix = prefix or {}
        self.superlink_host = superlink_host
        self.port = free_port()
        self.node_addresses = node_addresses or [self.address] * num_nodes
        self.supernode_keys = supernode_keys
        if supernode_keys is not None and (len(supernode_keys) != num_nodes or not certs):
            raise ValueError("SuperNode authentication needs TLS and one key per node")
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
        args = [*self.prefix.get(name, []), *args]
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
                self._wait_port(port, name)
            node_auth = ["--enable-supernode-auth"] if self.supernode_keys else []
            self._start("superlink", [_bin("flower-superlink"), *tls, *node_auth, "--host", self.superlink_host,
                                      "--port", str(self.port),
                                      "--database", str(self.workdir / "state.db"),
                                      "--disable-runtime-dependency-installation"])
            self._wait_port(self.port, "superlink")
            self._write_cli_config()
            for key in self.supernode_keys or []:
                subprocess.run([*self.prefix.get("flwr", []), _bin("flwr"), "supernode", "register",
                                str(key.with_suffix(".pub")), self.connection], env=self.env, check=True,
                               capture_output=True, timeout=120)
            node_tls = ["--root-certificates", str(self.certs["ca"])] if self.certs else ["--insecure"]
            for i in range(self.num_nodes):
                own = {"state-dir": str(self.workdir / "node-state" / f"node-{i}"),  # unless the caller names one
                       **self.node_config, **self.node_configs[i]}
                cfg = " ".join([f"partition-id={i}", f"num-partitions={self.num_nodes}"]
                               + [f'{k}="{v}"' for k, v in own.items()])
                key = ["--auth-supernode-private-key", str(self.supernode_keys[i])] if self.supernode_keys else []
                self._start(f"supernode-{i}", [_bin("flower-supernode"), *node_tls, *key, "--superlink",
                                               self.node_addresses[i],
                                               "--port", str(free_port()), "--node-config", cfg])
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self, port: int, name: str) -> bool:
        if name not in self.prefix:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"
        return subprocess.run([*self.prefix[name], sys.executable, "-c", probe], capture_output=True).returncode == 0

    def _wait_port(self, port: int, name: str = "superlink", timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                gone = next(n for n, p in zip(self.names, self.procs) if p.poll() is not None)
                raise RuntimeError(f"{gone} exited early; see {self.log_of(gone)}")
            if self._listening(port, name):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not listen on {port} within {timeout:.0f} s")

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
        return [*self.prefix.get("flwr", []), _bin("flwr"), "run", str(app_dir), self.connection, "--stream", "-c",
                run_config]

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


def make_supernode_key(path: Path) -> Path:
    """An EC P-384 key pair in OpenSSH format for Flower's SuperNode authentication: ``path`` (0600) and ``.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                   serialization.NoEncryption()))
    path.with_suffix(".pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                       serialization.PublicFormat.OpenSSH))
    return path
