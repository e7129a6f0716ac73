"""``bastionfl deploy local``: the whole deployment topology as processes on this machine, in one command.

One CA signs the SuperLink's and the Home Authority's TLS certificates; the HA (``bastionfl ha serve``) enrols N
nodes, each with its own credential file; a SuperLink with TLS and N SuperNodes (each with its own node config:
partition, credential) start through :class:`~bastionfl.deploy.loopback.LoopbackFederation`; the ``flwr`` CLI gets a
``[superlink.bastionfl-local]`` connection entry; ``flwr run`` then runs the federation with pseudonymous admission
and xMK-CKKS. Success is read from the run's ``metrics.json`` (``flwr run`` exits 0 even when the ServerApp failed).
Every process is started here and stopped by its PID, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bastionfl.errors import BastionFLError

__all__ = ["CONNECTION", "DeployError", "LocalDeployment", "parse_settings", "default_app_dir"]

CONNECTION = "bastionfl-local"
SERVER_ID = "fl-server"  # the default auth-server-id; prepare.py enrols the nodes for it


class DeployError(BastionFLError):
    """A local deployment could not be set up or its federation did not complete (``usage``: the user's mistake)."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def default_app_dir() -> Path:
    """The Flower app to run: the current folder if it is one, else the project this package belongs to."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[2]):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "[tool.flwr.app" in pyproject.read_text():
            return candidate
    raise DeployError("no Flower app here: run from the BastionFL project folder or pass --app DIR", usage=True)


def _toml_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (2, 0.5, true, 'x') when it parses as one, else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (Flower run-config keys, dashes; underscores accepted) into typed values."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DeployError(f"--set expects key=value, got {pair!r}", usage=True)
        out[key.strip().replace("_", "-")] = _toml_value(value.strip())
    return out


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


@dataclass
class LocalDeployment:
    """One local deployment: where its files go, how many nodes, which run-config overrides."""

    workdir: Path
    nodes: int = 3
    settings: dict[str, Any] = field(default_factory=dict)
    app_dir: Path | None = None
    outsiders: int = 0  # extra SuperNodes with no credential: admission must shut them out
    supernode_auth: bool = False  # Flower's SuperNode authentication (static, linkable node keys) on top
    say: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 64:
            raise DeployError("--nodes must be between 1 and 64", usage=True)
        if not 0 <= self.outsiders <= 16:
            raise DeployError("--outsiders must be between 0 and 16", usage=True)
        self.workdir = self.workdir.resolve()
        self.ha_port = 0
        self.paths: dict[str, Path] = {}

    def run_config(self) -> dict[str, Any]:
        """The run config of the federation: secure defaults, then the user's ``--set`` values."""
        members = min(3, self.nodes)
        cfg: dict[str, Any] = {
            "num-server-rounds": 2, "num-clients": self.nodes + self.outsiders, "secure-aggregation": "xmkckks",
            "min-members": members, "min-uploads": members, "auth": "pseudonym", "auth-server-id": SERVER_ID,
            "auth-ha-url": f"https://127.0.0.1:{self.ha_port}", "auth-ha-token-file": str(self.paths["token"]),
            "auth-ha-ca": str(self.paths["ca"]), "out-dir": str(self.workdir / "out"),
        }
        cfg.update(self.settings)
        from bastionfl.config import ConfigError, from_run_config

        try:
            from_run_config(cfg)
        except ConfigError as exc:
            raise DeployError(str(exc), usage=True) from None
        return cfg

    def _prepare(self) -> list[dict[str, str]]:
        """Certificates from one CA, the HA's database with N enrolled nodes, their credentials, the HA token."""
        from bastionfl.deploy.loopback import free_port
        from bastionfl.deploy.prepare import PrepareError, prepare_deployment

        local = (["localhost"], ["127.0.0.1"])
        try:
            self.prepared = prepare_deployment(self.workdir / "files", self.nodes, superlink_names=local,
                                               ha_names=local)
        except PrepareError as exc:
            raise DeployError(f"{exc}: remove it or pick another --workdir", usage=True) from None
        pr = self.prepared
        self.paths = {"ca": pr.ca, "token": pr.server_token}
        self.superlink_certs = {k: pr.superlink(k) for k in ("ca", "cert", "key")}
        self.ha_port = free_port()
        return [{"auth-cred": str(pr.credential(i))} for i in range(self.nodes)] + [{}] * self.outsiders

    def _ha_service(self) -> tuple[str, list[str], int]:
        ha = self.prepared.ha
        return ("ha", [sys.executable, "-m", "bastionfl.cli.main", "ha", "serve", "--db", str(ha("db")),
                       "--kek-file", str(ha("kek")), "--cert", str(ha("cert")), "--key", str(ha("key")),
                       "--host", "127.0.0.1", "--port", str(self.ha_port),
                       "--server", f"{SERVER_ID}={ha('token')}", "--log-level", "warning"], self.ha_port)

    def _where(self, fed: Any, cfg: dict[str, Any], run_config: str) -> None:
        pids = fed.pids()
        self.say(f"BastionFL local deployment in {self.workdir}")
        self.say(f"  CA certificate      {self.paths['ca']}")
        self.say(f"  Home Authority      https://127.0.0.1:{self.ha_port}  pid {pids['ha']}  log {fed.log_of('ha')}")
        self.say(f"  SuperLink (TLS)     {fed.address}  pid {pids['superlink']}  log {fed.log_of('superlink')}")
        for i in range(self.nodes + self.outsiders):
            cred = self.prepared.credential(i) if i < self.nodes else "none (an outsider: admission refuses it)"
            self.say(f"  SuperNode {i:<3}       pid {pids[f'supernode-{i}']}  credential {cred}  "
                     f"log {fed.log_of(f'supernode-{i}')}")
        if self.supernode_auth:
            self.say(f"  SuperNode auth      on: node keys in {self.workdir / 'node-keys'}, registered with "
                     "flwr supernode register (static keys: linkable across rounds and runs)")
        self.say(f"  flwr connection     [superlink.{CONNECTION}] in {fed.cli_config}")
        self.say(f"  results             {cfg['out-dir']}/metrics.json")
        self.say(f"  run command         FLWR_HOME={fed.flwr_home} flwr run {self.app_dir} {CONNECTION} --stream "
                 f"-c '{run_config}'")

    def _outcome(self, cfg: dict[str, Any], fed: Any) -> list[dict[str, Any]]:
        metrics = Path(cfg["out-dir"]) / "metrics.json"
        if not metrics.is_file():
            raise DeployError(f"the federation wrote no results; see {fed.log_of('superlink')}")
        data = json.loads(metrics.read_text())
        if data.get("status") != "completed":
            raise DeployError(f"the federation did not complete ({data.get('status')}); see "
                              f"{fed.log_of('superlink')}")
        return list(data["rounds"])

    def run(self, *, timeout_s: float = 1800.0, keep_running: bool = False) -> list[dict[str, Any]]:
        """Stand everything up, run the federation, stop everything; returns the rounds' metrics."""
        from bastionfl.deploy.loopback import LoopbackFederation

        self.app_dir = (self.app_dir or default_app_dir()).resolve()
        self.paths = {"token": self.workdir / "files" / "serverapp", "ca": self.workdir / "files" / "ca.crt"}
        self.run_config()  # the user's settings are checked before anything is written
        node_configs = self._prepare()
        cfg = self.run_config()
        from bastionfl.config import from_run_config

        # each node's operator pins the threat model and minimums it accepts (the server cannot downgrade them)
        secure = from_run_config(cfg).secure
        pins = {"threat-model": str(secure.threat_model), "min-members": str(secure.min_members),
                "min-uploads": str(secure.min_uploads), "threshold": str(secure.threshold)}
        # ... and keeps its state folder: the updates it let be decrypted stay refused after a SuperNode restart
        node_configs = [{**pins, "state-dir": str(self.workdir / "node-state" / f"node-{i}"), **c}
                        for i, c in enumerate(node_configs)]
        run_config = " ".join(f"{k}={_toml_literal(v)}" for k, v in cfg.items())
        keys = None
        if self.supernode_auth:
            from bastionfl.deploy.loopback import make_supernode_key

            (self.workdir / "node-keys").mkdir(mode=0o700)
            keys = [make_supernode_key(self.workdir / "node-keys" / f"supernode-{i}.key")
                    for i in range(self.nodes + self.outsiders)]
        fed = LoopbackFederation(self.workdir, self.nodes + self.outsiders, certs=self.superlink_certs,
                                 node_configs=node_configs, services=[self._ha_service()], connection=CONNECTION,
                                 supernode_keys=keys)
        with fed:
            self._where(fed, cfg, run_config)
            self.say("running the federation (flwr run --stream) ...")
            proc = fed.run_app(self.app_dir, run_config, timeout=timeout_s, capture=False)
            if proc.returncode != 0:
                raise DeployError(f"flwr run exited with status {proc.returncode}; see {fed.log_of('superlink')}")
            rounds = self._outcome(cfg, fed)
            for r in rounds:
                drops = sum((r.get("dropouts") or {}).values())
                self.say(f"round {r['round']}: accuracy {r['accuracy']:.4f}, admitted {r.get('auth_admitted', '-')}, "
                         f"rejected {r.get('auth_rejected', '-')}, dropouts {drops}, up {r['bytes_up']} B, "
                         f"down {r['bytes_down']} B, {r['time_s']:.1f} s")
            if keep_running:
                self.say("the deployment keeps running: start more runs with the run command above; Ctrl-C stops it")
                while all(p.poll() is None for p in fed.procs):
                    time.sleep(1.0)
        return rounds


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so the deployment's context stops every process it started."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
