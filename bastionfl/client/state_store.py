"""A client's defense state on disk, per partition and round, so that ``--resume`` continues ABL and BTU.

Flower keeps a node's state in its context only for the life of the process; a resumed run starts with empty
contexts. With a state folder (the node config's ``state-dir``; a simulation pins ``client_state_dir``), each client also
writes its state after every round to
``<dir>/partition-<id>/round-<r>.json`` and, when its context is empty, reads the latest round before the one it is
asked to train (a state written for a round the server never checkpointed is skipped, so a round that is re-run
starts from the state the checkpointed round left). Only the last two rounds are kept.

The same folder keeps ``xmk-spent.json``: the digests of the training results this node let be decrypted, which it
never uploads again. It outlives the process, so a restarted node (local training is seeded by round and
partition, so it recomputes the same update) still refuses to upload a result a server already decrypted.

And ``xmk-state-tag``: a random tag of the key-epoch state the node stored last (the state itself, secrets inside,
stays in the node's context). Flower runs each message in a ClientApp process of its own, handed the context as it
was stored when the process started; two messages sent together would both start from one state and each pass the
"one share per round" checks. A step is kept only if the tag of the state it started from is still the one on disk
(compare-and-swap under a lock), so the second of two such steps is refused before anything leaves.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["load_client_state", "save_client_state", "load_spent", "save_spent", "advance_state_tag"]

_KEEP = 2


def _folder(root: str, partition_id: int) -> Path:
    return Path(root) / f"partition-{int(partition_id)}"


def _rounds(folder: Path) -> list[int]:
    out = []
    for p in folder.glob("round-*.json"):
        try:
            out.append(int(p.stem.split("-", 1)[1]))
        except ValueError:
            continue
    return sorted(out)


def load_client_state(root: str, partition_id: int, server_round: int) -> dict[str, str]:
    """The state this partition wrote after its latest round before ``server_round`` (empty when none)."""
    folder = _folder(root, partition_id)
    earlier = [r for r in _rounds(folder) if r < server_round] if folder.is_dir() else []
    if not earlier:
        return {}
    data = json.loads((folder / f"round-{earlier[-1]}.json").read_text())
    return {str(k): str(v) for k, v in data.items()}


def save_client_state(root: str, partition_id: int, server_round: int, state: dict[str, str]) -> None:
    """Write this partition's state after ``server_round`` atomically; drop all but the last rounds."""
    folder = _folder(root, partition_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"round-{int(server_round)}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(state)))
    os.replace(tmp, path)
    for r in _rounds(folder)[:-_KEEP]:
        (folder / f"round-{r}.json").unlink(missing_ok=True)


def _spent_path(root: str, partition_id: int) -> Path:
    return _folder(root, partition_id) / "xmk-spent.json"


@contextlib.contextmanager
def _locked(root: str, partition_id: int) -> Iterator[Path]:
    """This partition's folder, held under an exclusive lock (one ClientApp process at a time)."""
    folder = _folder(root, partition_id)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "xmk.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def advance_state_tag(root: str, partition_id: int, held: str | None, new: str) -> bool:
    """Store ``new`` as the tag of this node's key-epoch state if the state the step started from (``held``; None:
    the context held none, a fresh process) is the one stored last; False (nothing written) otherwise."""
    with _locked(root, partition_id) as folder:
        path = folder / "xmk-state-tag"
        last = path.read_text().strip() if path.is_file() else None
        if held is not None and last is not None and last != held:
            return False
        _write_durably(path, new)
        return True


def load_spent(root: str, partition_id: int) -> tuple[list[bytes], list[bytes]]:
    """The digests of this partition's updates already released for decryption, and those pending (empty: none)."""
    path = _spent_path(root, partition_id)
    if not path.is_file():
        return [], []
    data = json.loads(path.read_text())
    return ([bytes.fromhex(d) for d in data.get("released", [])], [bytes.fromhex(d) for d in data.get("pending", [])])


def save_spent(root: str, partition_id: int, released: list[bytes], pending: list[bytes]) -> None:
    """Add these digests to the record, atomically and durably (fsync), before the upload or share they guard
    leaves. Merged with what is on disk under the lock: a task that read the record before another released a result
    never undoes that release by writing its older view."""
    with _locked(root, partition_id):
        disk_released, disk_pending = load_spent(root, partition_id)
        done = [*disk_released, *(d for d in released if d not in disk_released)]
        waiting = [d for d in [*disk_pending, *(d for d in pending if d not in disk_pending)] if d not in done]
        _write_durably(_spent_path(root, partition_id),
                       json.dumps({"released": [d.hex() for d in done], "pending": [d.hex() for d in waiting]}))
