"""Everything a deployment needs before its first process starts, in one folder: one CA, TLS certificates for the
SuperLink and the Home Authority, the HA's database with N enrolled nodes, each node's own credential file, and
the FL server's bearer token for the HA.

Layout (``bastionfl deploy prepare`` writes it; ``deploy local`` and the compose file's ``setup`` service use it)::

    ca.crt                      the deployment's CA (public)
    superlink/                  ca.crt server.pem server.key         -> the SuperLink
    ha/                         ca.crt server.pem server.key ha.sqlite ha.kek fl-server.token -> the HA service
    serverapp/                  ca.crt fl-server.token               -> where the ServerApp runs
    nodes/node-<i>/             ca.crt credential.json               -> where node i's ClientApp runs
    superlink-state/            (empty) the SuperLink's database folder, writable by ``owner``
    node-state/node-<i>/        (empty) node i's state folder (``--node-config state-dir``), writable by ``owner``

Secrets are 0600 and, with ``owner``, owned by that uid:gid (Flower's images run as uid 49999), so each container
reads its own files and nothing else.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from bastionfl.errors import BastionFLError

__all__ = ["Prepared", "PrepareError", "prepare_deployment", "SERVER_ID", "TOKEN_NAME"]

SERVER_ID = "fl-server"
TOKEN_NAME = "fl-server.token"


class PrepareError(BastionFLError):
    """The deployment folder cannot be prepared."""


@dataclass(frozen=True)
class Prepared:
    """Where ``prepare_deployment`` put things."""

    root: Path
    nodes: int

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    def superlink(self, name: str) -> Path:
        """``ca``, ``cert`` or ``key`` of the SuperLink."""
        return self.root / "superlink" / {"ca": "ca.crt", "cert": "server.pem", "key": "server.key"}[name]

    def ha(self, name: str) -> Path:
        """A file of the HA: ca, cert, key, db, kek, token."""
        files = {"ca": "ca.crt", "cert": "server.pem", "key": "server.key", "db": "ha.sqlite", "kek": "ha.kek",
                 "token": TOKEN_NAME}
        return self.root / "ha" / files[name]

    @property
    def server_token(self) -> Path:
        return self.root / "serverapp" / TOKEN_NAME

    def credential(self, i: int) -> Path:
        return self.root / "nodes" / f"node-{i}" / "credential.json"


def _secret_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _own(root: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    for path in [root, *root.rglob("*")]:
        os.chown(path, *owner)


def prepare_deployment(root: Path, nodes: int, *, superlink_names: tuple[list[str], list[str]],
                       ha_names: tuple[list[str], list[str]], owner: tuple[int, int] | None = None,
                       days: int = 30) -> Prepared:
    """Write the layout above into ``root`` (which must not hold one yet); ``*_names`` are (DNS names, IPs)."""
    from bastionfl.auth import FileCredentialStore, HomeAuthority, load_or_create_kek
    from bastionfl.deploy.certs import make_deployment_certificates

    if not 1 <= nodes <= 1000:
        raise PrepareError("the number of nodes must be between 1 and 1000")
    out = Prepared(root, nodes)
    if out.ha("db").exists():
        raise PrepareError(f"{root} already holds a prepared deployment")
    make_deployment_certificates(root, {"superlink": superlink_names, "ha": ha_names}, days)
    (root / "superlink-state").mkdir(exist_ok=True)
    for i in range(nodes):  # a node refuses a malicious threat model without its state folder
        (root / "node-state" / f"node-{i}").mkdir(parents=True, exist_ok=True)
    for sub in ["serverapp"] + [f"nodes/node-{i}" for i in range(nodes)]:
        (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out.ca, root / sub / "ca.crt")
    token = secrets.token_hex(32) + "\n"
    _secret_file(out.ha("token"), token)
    _secret_file(out.server_token, token)
    ha = HomeAuthority.open(out.ha("db"), load_or_create_kek(out.ha("kek")))
    try:
        for i in range(nodes):
            FileCredentialStore(out.credential(i)).save(ha.enroll(f"node-{i}", [SERVER_ID]))
    finally:
        ha.store.close()
    for path in root.rglob("*"):  # directories and public files readable, secrets left at 0600
        if path.is_dir():
            path.chmod(0o750)
        elif path.suffix == ".crt" or path.name == "server.pem":
            path.chmod(0o644)
    root.chmod(0o755)
    _own(root, owner)
    return out
