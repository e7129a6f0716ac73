"""Home Authority state in SQLite (WAL): long-term keys encrypted at rest under a KEK, pseudonym index, counters."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import AuthError, MalformedInput
from .primitives import PREFIX, mac

__all__ = ["HAStore", "load_or_create_kek"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ha_keys (
    kid INTEGER PRIMARY KEY, sk_enc BLOB, pk BLOB NOT NULL, created REAL NOT NULL, not_after REAL);
CREATE TABLE IF NOT EXISTS clients (
    cid BLOB PRIMARY KEY, k_enc BLOB NOT NULL, ctr_committed INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'active', created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pids (
    pid_tag BLOB PRIMARY KEY, cid BLOB NOT NULL, committed INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS pids_by_cid ON pids (cid);
CREATE TABLE IF NOT EXISTS registry (label TEXT PRIMARY KEY, cid BLOB NOT NULL UNIQUE, servers TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS handles (handle BLOB PRIMARY KEY, cid BLOB NOT NULL, server_id TEXT NOT NULL, t REAL);
CREATE INDEX IF NOT EXISTS handles_by_time ON handles (t);
CREATE TABLE IF NOT EXISTS retired_pids (pid_tag BLOB PRIMARY KEY, cid BLOB NOT NULL, t REAL NOT NULL);
CREATE INDEX IF NOT EXISTS retired_by_cid ON retired_pids (cid);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('decoys', 0), ('challenges', 0), ('pid_seq', 0), ('clone_alerts', 0);
CREATE TABLE IF NOT EXISTS roster_key (id INTEGER PRIMARY KEY CHECK (id = 1), sk_enc BLOB NOT NULL, pk BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rosters (
    server_id TEXT NOT NULL, run_id INTEGER NOT NULL, key_epoch INTEGER NOT NULL, roster BLOB NOT NULL,
    t REAL NOT NULL, PRIMARY KEY (server_id, run_id, key_epoch));
"""


def _sql_int(value: int) -> int:
    """An unsigned 64-bit id (Flower's run ids use the full range) as SQLite's signed 64-bit INTEGER, one to one."""
    if not 0 <= value < 1 << 64:
        raise MalformedInput("id out of the 64-bit range")
    return value - (1 << 64) if value >= 1 << 63 else value


def load_or_create_kek(path: str | os.PathLike[str], *, create: bool = True) -> bytes:
    """Read a 32-byte key-encryption key (hex) from a 0600 file, creating it when ``create`` and absent."""
    p = Path(path)
    if not p.exists():
        if not create:
            raise AuthError("key-encryption key file not found")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
    if p.stat().st_mode & 0o077:
        raise AuthError("key-encryption key file permissions are too open (need 0600)")
    try:
        kek = bytes.fromhex(p.read_text().strip())
    except ValueError:
        kek = b""
    if len(kek) != 32:
        raise AuthError("key-encryption key file is malformed")
    return kek


@dataclass(frozen=True, slots=True, repr=False)
class ClientRow:
    """One client's HA record (decrypted ``key`` is secret)."""

    cid: bytes
    key: bytes
    ctr_committed: int
    active: bool

    def __repr__(self) -> str:
        return f"ClientRow(active={self.active})"


class HAStore:
    """SQLite store of one Home Authority; thread-safe (one connection behind a lock), WAL for concurrent admins."""

    def __init__(self, path: str | os.PathLike[str], kek: bytes) -> None:
        if not isinstance(kek, bytes) or len(kek) != 32:
            raise MalformedInput("KEK must be 32 bytes")
        self._aead = AESGCM(kek)
        self._pid_key = mac(kek, PREFIX + b"pid index")
        self._lock = threading.RLock()
        if str(path) != ":memory:" and not Path(path).exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # WAL/SHM inherit the mode
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        self._dummy_blob = self._seal(bytes(32), PREFIX + b"dummy")

    def __repr__(self) -> str:
        return "HAStore(<sqlite>)"

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # -- encryption at rest -------------------------------------------------------------------------------------
    def _seal(self, secret: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret, aad)

    def _open(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], aad)
        except Exception:
            raise AuthError("stored secret does not decrypt under this KEK") from None

    def _pid_tag(self, pid: bytes) -> bytes:
        # the index holds a keyed hash of each pseudonym, so a stolen database does not map captured PIDs to cids
        return mac(self._pid_key, pid)[:16]

    # -- HA keys ------------------------------------------------------------------------------------------------
    def add_key(self, kid: int, sk: bytes, pk: bytes) -> None:
        """Store a new X25519 key pair under ``kid`` (private half encrypted)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO ha_keys (kid, sk_enc, pk, created, not_after) VALUES (?, ?, ?, ?, NULL)",
                (kid, self._seal(sk, PREFIX + b"sk" + bytes((kid,))), pk, time.time()),
            )

    def keys(self) -> list[tuple[int, bytes | None, bytes, float | None]]:
        """All keys as ``(kid, private bytes or None once deleted, public bytes, not_after)``."""
        with self._lock:
            rows = self._db.execute("SELECT kid, sk_enc, pk, not_after FROM ha_keys ORDER BY kid").fetchall()
        out = []
        for kid, sk_enc, pk, not_after in rows:
            sk = None if sk_enc is None else self._open(sk_enc, PREFIX + b"sk" + bytes((kid,)))
            out.append((kid, sk, pk, not_after))
        return out

    def retire_keys(self, except_kid: int, not_after: float) -> None:
        """Give every other live key a deadline (grace period of a rotation)."""
        with self._lock:
            self._db.execute(
                "UPDATE ha_keys SET not_after = ? WHERE kid != ? AND not_after IS NULL", (not_after, except_kid)
            )

    def purge_keys(self, now: float) -> int:
        """Delete the private half of keys past their deadline; returns how many were deleted."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE ha_keys SET sk_enc = NULL WHERE not_after IS NOT NULL AND not_after < ? AND sk_enc IS NOT NULL",
                (now,),
            )
            return cur.rowcount

    # -- epoch rosters ------------------------------------------------------------------------------------------
    def roster_key(self, make: Callable[[], tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        """The HA's Ed25519 roster signing key ``(private, public)``, made by ``make`` on first use (encrypted)."""
        with self._lock:
            row = self._db.execute("SELECT sk_enc, pk FROM roster_key WHERE id = 1").fetchone()
            if row is None:
                sk, pk = make()
                self._db.execute("INSERT INTO roster_key VALUES (1, ?, ?)", (self._seal(sk, PREFIX + b"roster"), pk))
                return sk, pk
        return self._open(row[0], PREFIX + b"roster"), bytes(row[1])

    def sealed_roster(self, server_id: str, run_id: int, key_epoch: int) -> bytes | None:
        """The roster already signed under this label, if any (the HA never signs a second one)."""
        with self._lock:
            row = self._db.execute("SELECT roster FROM rosters WHERE server_id = ? AND run_id = ? AND key_epoch = ?",
                                   (server_id, _sql_int(run_id), _sql_int(key_epoch))).fetchone()
        return None if row is None else bytes(row[0])

    def seal_roster(self, server_id: str, run_id: int, key_epoch: int, roster: bytes) -> bytes:
        """Record a signed roster under its label; returns the one stored (the first wins)."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO rosters VALUES (?, ?, ?, ?, ?)",
                             (server_id, _sql_int(run_id), _sql_int(key_epoch), roster, time.time()))
        stored = self.sealed_roster(server_id, run_id, key_epoch)
        assert stored is not None
        return stored

    # -- clients ------------------------------------------------------------------------------------------------
    def create_client(self, label: str, cid: bytes, key: bytes, p0: bytes, servers: list[str]) -> None:
        """Register a client with its first pseudonym (committed); ``label`` is the separate identity registry."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO clients (cid, k_enc, created) VALUES (?, ?, ?)",
                    (cid, self._seal(key, PREFIX + b"K" + cid), time.time()),
                )
                self._db.execute("INSERT INTO registry VALUES (?, ?, ?)", (label, cid, "\n".join(servers)))
                self._insert_pid(cid, p0, committed=True)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _insert_pid(self, cid: bytes, pid: bytes, *, committed: bool) -> None:
        self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'pid_seq'")
        (seq,) = self._db.execute("SELECT value FROM counters WHERE name = 'pid_seq'").fetchone()
        self._db.execute(
            "INSERT OR REPLACE INTO pids VALUES (?, ?, ?, ?)", (self._pid_tag(pid), cid, int(committed), seq)
        )

    def label_exists(self, label: str) -> bool:
        """Whether an identity label is already enrolled."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM registry WHERE label = ?", (label,)).fetchone() is not None

    def cid_for_label(self, label: str) -> bytes | None:
        """Registry lookup (admin only)."""
        with self._lock:
            row = self._db.execute("SELECT cid FROM registry WHERE label = ?", (label,)).fetchone()
        return None if row is None else row[0]

    def lookup_pid(self, pid: bytes) -> bytes | None:
        """cid owning a committed or pending pseudonym, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT cid FROM pids WHERE pid_tag = ?", (self._pid_tag(pid),)).fetchone()
        return None if row is None else row[0]

    def client(self, cid: bytes) -> ClientRow | None:
        """Decrypted client record, or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT k_enc, ctr_committed, status FROM clients WHERE cid = ?", (cid,)
            ).fetchone()
        if row is None:
            self._open(self._dummy_blob, PREFIX + b"dummy")  # same decryption cost as a hit
            return None
        return ClientRow(cid, self._open(row[0], PREFIX + b"K" + cid), int(row[1]), row[2] == "active")

    def add_pending(self, cid: bytes, pid: bytes, cap: int, *, decoy: bool = False) -> None:
        """Write-ahead: index a pending ``P_next`` before msg2 leaves; keeps at most ``cap`` pendings per cid.

        Decoys run the same transaction against a sink cid that never exists, so both paths cost the same.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "UPDATE counters SET value = value + 1 WHERE name = ?", ("decoys" if decoy else "challenges",)
                )
                self._insert_pid(cid, pid, committed=False)
                self._db.execute(
                    "DELETE FROM pids WHERE cid = ? AND committed = 0 AND seq NOT IN "
                    "(SELECT seq FROM pids WHERE cid = ? AND committed = 0 ORDER BY seq DESC LIMIT ?)",
                    (cid, cid, cap),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def counter(self, name: str) -> int:
        """Read a named counter."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    HANDLE_TTL_S = 24 * 3600.0  # a session handle serves its round's key setup; older ones are pruned
    RETIRED_PIDS_PER_CLIENT = 4  # pseudonyms kept after rotation, only to recognise a cloned credential

    def commit(self, cid: bytes, ctr: int, p_next: bytes, handle: bytes, server_id: str,
               now: float | None = None) -> bool:
        """Atomically: re-check active and ``ctr > ctr_committed``, move the counter, keep only ``P_next``.

        The replaced pseudonyms move to a short per-client list (clone detection); handles older than
        ``HANDLE_TTL_S`` are pruned, so neither table grows with the number of handshakes.
        """
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT ctr_committed, status FROM clients WHERE cid = ?", (cid,)).fetchone()
                if row is None or row[1] != "active" or not ctr > int(row[0]):
                    self._db.execute("ROLLBACK")
                    return False
                self._db.execute("UPDATE clients SET ctr_committed = ? WHERE cid = ?", (ctr, cid))
                self._db.execute("INSERT OR REPLACE INTO retired_pids SELECT pid_tag, cid, ? FROM pids "
                                 "WHERE cid = ? AND committed = 1", (now, cid))
                self._db.execute("DELETE FROM retired_pids WHERE cid = ? AND pid_tag NOT IN (SELECT pid_tag FROM "
                                 "retired_pids WHERE cid = ? ORDER BY t DESC LIMIT ?)",
                                 (cid, cid, self.RETIRED_PIDS_PER_CLIENT))
                self._db.execute("DELETE FROM pids WHERE cid = ?", (cid,))
                self._insert_pid(cid, p_next, committed=True)
                self._db.execute("DELETE FROM handles WHERE t < ?", (now - self.HANDLE_TTL_S,))
                self._db.execute("INSERT INTO handles VALUES (?, ?, ?, ?)", (handle, cid, server_id, now))
                self._db.execute("COMMIT")
                return True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def lookup_retired_pid(self, pid: bytes) -> bytes | None:
        """cid that used ``pid`` before its last rotations, or ``None`` (clone detection only, never admission)."""
        with self._lock:
            row = self._db.execute("SELECT cid FROM retired_pids WHERE pid_tag = ?", (self._pid_tag(pid),)).fetchone()
        return None if row is None else row[0]

    def record_clone_alert(self, cid: bytes) -> str:
        """Count one clone alert; returns the client's enrolment label (for the HA operator's log)."""
        with self._lock:
            self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'clone_alerts'")
            self._db.commit()
            row = self._db.execute("SELECT label FROM registry WHERE cid = ?", (cid,)).fetchone()
        return "<unknown>" if row is None else str(row[0])

    def counter(self, name: str) -> int:
        """A persistent counter: decoys, challenges, clone_alerts."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def table_size(self, table: str) -> int:
        """Rows in one of the bounded tables (handles, retired_pids, pids): for metrics and tests."""
        if table not in ("handles", "retired_pids", "pids"):
            raise ValueError(table)
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 - fixed names

    def revoke(self, cid: bytes) -> bool:
        """Mark a client revoked and drop all its pseudonyms; ``False`` if unknown."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute("UPDATE clients SET status = 'revoked' WHERE cid = ?", (cid,))
            self._db.execute("DELETE FROM pids WHERE cid = ?", (cid,))
            self._db.execute("COMMIT")
            return cur.rowcount == 1

    def wipe_pid_index(self) -> None:
        """Drop every pseudonym (models a restore from an old backup); clients heal via recovery."""
        with self._lock:
            self._db.execute("DELETE FROM pids")
