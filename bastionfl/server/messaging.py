"""Sending one stage's messages through Flower's Grid, with payload byte accounting per node."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

__all__ = ["payload_bytes", "ByteCounter", "Messenger"]

log = logging.getLogger("bastionfl.server")


def _value_bytes(value: object) -> int:
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    return 1 if isinstance(value, bool) else 8


def payload_bytes(content: RecordDict) -> int:
    """Payload bytes of a message: array data plus keys and values of config and metric records (no framing)."""
    total = sum(record.count_bytes() for record in content.array_records.values())
    for group in (content.config_records, content.metric_records):
        for record in group.values():
            total += sum(len(k) + _value_bytes(v) for k, v in record.items())
    return total


@dataclass
class ByteCounter:
    """Bytes down (server to node) and up (node to server) per node and per stage, for one round."""

    down: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    up: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    by_stage: dict[str, dict[str, int]] = field(default_factory=dict)
    by_node_stage: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)

    def add(self, stage: str, node: int, *, down: int = 0, up: int = 0) -> None:
        self.down[node] += down
        self.up[node] += up
        for s in (self.by_stage.setdefault(stage, {"up": 0, "down": 0}),
                  self.by_node_stage.setdefault(node, {}).setdefault(stage, {"up": 0, "down": 0})):
            s["down"] += down
            s["up"] += up

    @property
    def total_up(self) -> int:
        return sum(self.up.values())

    @property
    def total_down(self) -> int:
        return sum(self.down.values())


class Messenger:
    """One request/reply exchange per stage; error replies and stragglers are logged and left out."""

    def __init__(self, grid: Grid, timeout_s: float, counter: ByteCounter) -> None:
        self.grid = grid
        self.timeout_s = timeout_s
        self.counter = counter

    POLL_S = 0.5  # how often an exchange that waits for some nodes only pulls replies

    def exchange(
        self, stage: str, message_type: str, node_ids: Iterable[int], content_for: Callable[[int], RecordDict],
        group_id: str, wait_for: Collection[int] | None = None,
    ) -> tuple[list[Message], list[int]]:
        """Send ``content_for(node)`` to every node; return (good replies, nodes that failed or timed out).

        The exchange ends when every node answered, or with ``wait_for``, when those nodes did (replies of the
        others that are in by then count too), or at the timeout.
        """
        messages = []
        nodes = list(node_ids)
        for nid in nodes:
            content = content_for(nid)
            self.counter.add(stage, nid, down=payload_bytes(content))
            messages.append(Message(content=content, dst_node_id=nid, message_type=message_type, group_id=group_id))
        if not messages:
            replies: list[Message] = []
        elif wait_for is None:
            replies = list(self.grid.send_and_receive(messages, timeout=self.timeout_s))
        else:
            replies = self._pull_until(messages, set(wait_for) & set(nodes))
        good: list[Message] = []
        answered: set[int] = set()
        for reply in replies:
            src = reply.metadata.src_node_id
            answered.add(src)
            if reply.has_error():
                log.warning("stage %s: node %s replied with an error: %s", stage, src, reply.error.reason)
                continue
            self.counter.add(stage, src, up=payload_bytes(reply.content))
            good.append(reply)
        failed = sorted(set(nodes) - {r.metadata.src_node_id for r in good})
        missing = sorted(set(nodes) - answered)
        if missing:
            log.warning("stage %s: %d node(s) did not answer within %.0f s", stage, len(missing), self.timeout_s)
        return good, failed

    def _pull_until(self, messages: list[Message], awaited: set[int]) -> list[Message]:
        """Push ``messages``; pull replies until every node in ``awaited`` answered or the timeout passed."""
        pending = set(self.grid.push_messages(messages))
        replies: list[Message] = []
        deadline = time.monotonic() + self.timeout_s
        while pending:
            for reply in self.grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
                awaited.discard(reply.metadata.src_node_id)
            if not pending or not awaited or time.monotonic() >= deadline:
                break
            time.sleep(self.POLL_S)
        return replies

    def exchange_streaming(
        self, stage: str, message_type: str, node_ids: Iterable[int], content_for: Callable[[int], RecordDict],
        group_id: str, on_reply: Callable[[Message], bool],
    ) -> list[int]:
        """Like ``exchange`` but hands each reply to ``on_reply`` as it arrives and keeps none of them.

        ``on_reply`` returns False to reject a reply (counted as failed). Returns the nodes that failed.
        """
        nodes = list(node_ids)
        messages = []
        for nid in nodes:
            content = content_for(nid)
            self.counter.add(stage, nid, down=payload_bytes(content))
            messages.append(Message(content=content, dst_node_id=nid, message_type=message_type, group_id=group_id))
        pending = set(self.grid.push_messages(messages)) if messages else set()
        accepted: set[int] = set()
        deadline = time.monotonic() + self.timeout_s
        while pending and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
                src = reply.metadata.src_node_id
                if reply.has_error():
                    log.warning("stage %s: node %s replied with an error: %s", stage, src, reply.error.reason)
                    continue
                self.counter.add(stage, src, up=payload_bytes(reply.content))
                if on_reply(reply):
                    accepted.add(src)
                del reply  # the reply's payload is folded in; keep no copy
            if pending:
                time.sleep(0.05)
        if pending:
            log.warning("stage %s: %d node(s) did not answer within %.0f s", stage, len(pending), self.timeout_s)
        return sorted(set(nodes) - accepted)
