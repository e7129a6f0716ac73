"""Client credential (the registration bundle) and its write-ahead file store (0600, fsync, atomic rename)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CredentialError

__all__ = ["ClientCredential", "FileCredentialStore", "MemoryCredentialStore"]

_FORMAT = "bastionfl-auth-credential"


def _hex(value: object, length: int, name: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != length:
        raise CredentialError(f"credential field {name!r} is malformed")
    return raw


@dataclass(slots=True, repr=False)
class ClientCredential:
    """Everything a client keeps: cid, K, the pinned HA key, its unused pseudonym and its counter (all secret)."""

    cid: bytes
    key: bytes
    kid: int
    ha_public_key: bytes
    pid: bytes | None
    ctr: int
    servers: tuple[str, ...]
    pid_burned: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    roster_public_key: bytes | None = None  # the HA's Ed25519 roster key (None: enrolled before rosters existed)

    def __repr__(self) -> str:
        return f"ClientCredential(kid={self.kid}, servers={list(self.servers)!r}, <secret fields hidden>)"

    def to_bytes(self) -> bytes:
        """Serialise as JSON (secrets in hex): write it only through a 0600 store."""
        doc = {
            "format": _FORMAT,
            "version": 1,
            "cid": self.cid.hex(),
            "key": self.key.hex(),
            "kid": self.kid,
            "ha_public_key": self.ha_public_key.hex(),
            "pid": None if self.pid is None else self.pid.hex(),
            "pid_burned": self.pid_burned,
            "ctr": self.ctr,
            "servers": list(self.servers),
        }
        if self.roster_public_key is not None:
            doc["roster_public_key"] = self.roster_public_key.hex()
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientCredential:
        """Parse :meth:`to_bytes` output; :class:`CredentialError` on anything unexpected."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise CredentialError("credential is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("version") != 1:
            raise CredentialError("not a version-1 BastionFL credential")
        kid, ctr, servers = doc.get("kid"), doc.get("ctr"), doc.get("servers")
        if not isinstance(kid, int) or isinstance(kid, bool) or not 1 <= kid <= 255:
            raise CredentialError("credential field 'kid' is malformed")
        if not isinstance(ctr, int) or isinstance(ctr, bool) or not 0 <= ctr < 1 << 64:
            raise CredentialError("credential field 'ctr' is malformed")
        if not isinstance(servers, list) or not all(isinstance(s, str) and s for s in servers):
            raise CredentialError("credential field 'servers' is malformed")
        pid = doc.get("pid")
        return cls(
            cid=_hex(doc.get("cid"), 16, "cid"),
            key=_hex(doc.get("key"), 32, "key"),
            kid=kid,
            ha_public_key=_hex(doc.get("ha_public_key"), 32, "ha_public_key"),
            pid=None if pid is None else _hex(pid, 16, "pid"),
            ctr=ctr,
            servers=tuple(servers),
            pid_burned=bool(doc.get("pid_burned", False)),
            roster_public_key=(None if doc.get("roster_public_key") is None
                               else _hex(doc.get("roster_public_key"), 32, "roster_public_key")),
        )


class MemoryCredentialStore:
    """In-memory store for simulations and tests: same interface as :class:`FileCredentialStore`."""

    def __init__(self, credential: ClientCredential) -> None:
        self._data = credential.to_bytes()

    def __repr__(self) -> str:
        return "MemoryCredentialStore(<secret>)"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """No cross-process lock is needed in memory."""
        yield

    def load(self) -> ClientCredential:
        """Return a fresh copy of the stored credential."""
        return ClientCredential.from_bytes(self._data)

    def save(self, credential: ClientCredential) -> None:
        """Replace the stored credential."""
        self._data = credential.to_bytes()


class FileCredentialStore:
    """Credential file with mode 0600, an ``fcntl`` lock, and write -> fsync -> rename updates (crash-safe)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileCredentialStore({self.path.name!r})"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive advisory lock (a sibling ``.lock`` file) across a read-modify-write."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def load(self) -> ClientCredential:
        """Read the credential; refuses files readable by group or others."""
        try:
            st = self.path.stat()
            if st.st_mode & 0o077:
                raise CredentialError("credential file permissions are too open (need 0600)")
            data = self.path.read_bytes()
        except OSError:
            raise CredentialError("credential file cannot be read") from None
        return ClientCredential.from_bytes(data)

    def save(self, credential: ClientCredential) -> None:
        """Write-ahead persist: temp file 0600, fsync, atomic rename, fsync of the directory."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, credential.to_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
