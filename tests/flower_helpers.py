"""Helpers for calling ClientApp handlers directly, without the Flower runtime."""

from __future__ import annotations

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp


def node_context(partition_id: int, num_partitions: int, node_id: int | None = None) -> Context:
    """A Context as a SuperNode would give one ClientApp."""
    from flwr.supercore.task_identity import TaskIdentity  # private API, pinned by flwr<1.43

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    return Context(run_id=1, node_id=node_id or 100 + partition_id, state=RecordDict(), run_config={},
                   node_config={"partition-id": partition_id, "num-partitions": num_partitions})


def call(app: ClientApp, content: RecordDict, message_type: str, ctx: Context) -> Message:
    """Deliver one message to ``app`` and return its reply."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    msg = Message(content, dst_node_id=ctx.node_id, message_type=message_type)
    return app(msg, ctx)
