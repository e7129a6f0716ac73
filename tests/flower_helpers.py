"""Helpers for calling ClientApp handlers directly, without the Flower runtime."""

from __future__ import annotations

from typing import Callable
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import message_from_proto, message_to_proto

RUN_ID = 1


def node_context(partition_id: int, num_partitions: int, node_id: int | None = None,
                 state_dir: object = None) -> Context:
    """A Context as a SuperNode would give one ClientApp (``state_dir``: its ``--node-config state-dir``, which a node
    needs for a malicious or malicious-colluding epoch)."""
    from flwr.supercore.task_identity import TaskIdentity  # private API, pinned by the exact flwr version

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    node_config: dict = {"partition-id": partition_id, "num-partitions": num_partitions}
    if state_dir is not None:
        node_config["state-dir"] = str(state_dir)
    return Context(run_id=1, node_id=node_id or 100 + partition_id, state=RecordDict(), run_config={},
                   node_config=node_config)


def call(app: ClientApp, content: RecordDict, message_type: str, ctx: Context) -> Message:
    """Deliver one message to ``app`` and return its reply."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    msg = Message(content, dst_node_id=ctx.node_id, message_type=message_type)
    return app(msg, ctx)


def wire(msg: Message) -> Message:
    return message_from_proto(message_to_proto(msg))


class _Run:
    """Flower's Run as the stage reads it."""

    run_id = RUN_ID


class LoopGrid:
    """A Grid that delivers each message to the node's ClientApp in process, through protobuf both ways."""

    def __init__(self, app: ClientApp, contexts: dict[int, Context]) -> None:
        self.app, self.contexts = app, contexts
        self.run = _Run()
        self.sent: list[Message] = []
        self.tamper_reply: Callable[[Message], Message] | None = None
        self._replies: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return sorted(self.contexts)

    def deliver(self, msg: Message) -> Message:
        """Deliver one message to its node (tests call this to replay or forge)."""
        return wire(self.app(wire(msg), self.contexts[msg.metadata.dst_node_id]))

    def send_and_receive(self, messages: list[Message], *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's own grids do
            self.sent.append(wire(msg))
            reply = self.deliver(msg)
            self._replies.append(self.tamper_reply(reply) if self.tamper_reply else reply)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: list[str]) -> list[Message]:
        wanted = set(message_ids)
        out = [r for r in self._replies if r.metadata.reply_to_message_id in wanted]
        self._replies = [r for r in self._replies if r.metadata.reply_to_message_id not in wanted]
        return out
