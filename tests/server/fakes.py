"""A scripted messenger and grid for unit tests of single server stages: no Flower runtime, no ClientApp.

Each fake node is a function ``respond(node_id, message_type, content) -> RecordDict | None``; ``None`` plays a
node that never answers (a dropout), an exception plays a node that replies with an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable
from uuid import uuid4

import torch
from flwr.app import Message, RecordDict

from bastionfl.config import RunConfig
from bastionfl.server.messaging import ByteCounter, Messenger, payload_bytes
from bastionfl.server.workflow import RoundState, ServerContext
from bastionfl.tasks.registry import build_task

Respond = Callable[[int, str, RecordDict], "RecordDict | None"]


@dataclass
class Sent:
    """One message the stage sent: to whom, of which type, with what."""

    node: int
    message_type: str
    content: RecordDict


@dataclass
class FakeGrid:
    """What stages read from the grid directly: the connected nodes and the run id."""

    nodes: list[int]

    @property
    def run(self) -> "FakeGrid":
        return self

    run_id: int = 1

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def _reply(request: Message, content: RecordDict) -> Message:
    request.metadata.__dict__["_message_id"] = str(uuid4())  # a pushed message has an id, as Flower gives one
    return Message(content, reply_to=request)  # from the request's destination node


def _identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity  # private API, pinned by the exact flwr version

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1


@dataclass
class FakeMessenger(Messenger):
    """A Messenger whose exchanges call ``respond`` for each node instead of going through Flower."""

    respond: Respond
    counter: ByteCounter = field(default_factory=ByteCounter)
    sent: list[Sent] = field(default_factory=list)
    timeout_s: float = 1.0
    clock: float = 0.0  # virtual seconds spent waiting: an exchange that waits for a silent node costs its timeout

    def __post_init__(self) -> None:
        self.grid = None  # type: ignore[assignment]

    def _send(self, stage: str, message_type: str, nodes: list[int], content_for: Callable[[int], RecordDict],
              group_id: str, wait_for: Collection[int] | None = None) -> tuple[list[Message], list[int]]:
        _identity()
        good: list[Message] = []
        silent = False
        if wait_for is not None and not set(wait_for) & set(nodes):  # waits for nobody: over before any reply
            for nid in nodes:
                content = content_for(nid)
                self.counter.add(stage, nid, down=payload_bytes(content))
                self.sent.append(Sent(nid, message_type, content))
            return [], sorted(nodes)
        for nid in nodes:
            content = content_for(nid)
            self.counter.add(stage, nid, down=payload_bytes(content))
            self.sent.append(Sent(nid, message_type, content))
            request = Message(content=content, dst_node_id=nid, message_type=message_type, group_id=group_id)
            try:
                answer = self.respond(nid, message_type, content)
            except Exception:  # noqa: BLE001 - a node that replies with an error
                continue
            if answer is None:
                silent = silent or wait_for is None or nid in wait_for
                continue
            self.counter.add(stage, nid, up=payload_bytes(answer))
            good.append(_reply(request, answer))
        if silent:
            self.clock += self.timeout_s
        return good, sorted(set(nodes) - {r.metadata.src_node_id for r in good})

    def exchange(self, stage: str, message_type: str, node_ids: Iterable[int],
                 content_for: Callable[[int], RecordDict], group_id: str,
                 wait_for: Collection[int] | None = None) -> tuple[list[Message], list[int]]:
        return self._send(stage, message_type, list(node_ids), content_for, group_id, wait_for)

    def exchange_streaming(self, stage: str, message_type: str, node_ids: Iterable[int],
                           content_for: Callable[[int], RecordDict], group_id: str,
                           on_reply: Callable[[Message], bool]) -> list[int]:
        nodes = list(node_ids)
        good, _ = self._send(stage, message_type, nodes, content_for, group_id)
        accepted = {r.metadata.src_node_id for r in reversed(good) if on_reply(r)}  # any arrival order will do
        return sorted(set(nodes) - accepted)


def stage_context(cfg: RunConfig, nodes: list[int], respond: Respond) -> tuple[ServerContext, FakeMessenger]:
    """A server context whose every round talks to ``respond`` through one FakeMessenger."""
    messenger = FakeMessenger(respond)
    ctx = ServerContext(grid=FakeGrid(nodes), cfg=cfg, task=build_task(cfg))  # type: ignore[arg-type]
    def wrap(inner: Messenger, _rs: RoundState) -> Messenger:
        messenger.counter = inner.counter  # the round's byte counter
        messenger.timeout_s = inner.timeout_s  # how long this exchange would wait for a silent node
        return messenger

    ctx.messenger_wrappers.append(wrap)
    return ctx, messenger


def round_state(ctx: ServerContext, server_round: int = 1, nodes: list[int] | None = None) -> RoundState:
    """A fresh round over the task's round-0 model."""
    torch.manual_seed(ctx.cfg.federation.seed)
    state = {k: v.detach().clone() for k, v in ctx.new_model().state_dict().items()}
    rs = RoundState(server_round, state)
    rs.node_ids = list(nodes if nodes is not None else ctx.grid.get_node_ids())
    return rs
