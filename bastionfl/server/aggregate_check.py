"""Refuse an aggregate that is not a model: non-finite values or a negative BN variance.

Attacker: clients that boost (scale) their update. Under secure aggregation the server sees only the sum, and a
boosted sum can leave the model's numbers invalid (measured: a boost of 10/3 by 3 of 10 clients on Fashion-MNIST
drove one BN running variance below zero, and the released model's loss was NaN). Such a round is skipped: the
previous global model is kept, and the round line and metrics say why. The check reads the decrypted aggregate
only, so it applies with and without xMK-CKKS.
"""

from __future__ import annotations

import torch

from bastionfl.protocol import Stage
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext

__all__ = ["CheckAggregate", "invalid_tensors"]

_VARIANCE_SUFFIX = "running_var"


def invalid_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors that make ``state`` unusable: non-finite values, or a negative BN running variance."""
    bad = []
    for name, t in state.items():
        if not t.is_floating_point():
            continue
        if not bool(torch.isfinite(t).all()):
            bad.append(f"{name} (non-finite)")
        elif name.endswith(_VARIANCE_SUFFIX) and bool((t < 0).any()):
            bad.append(f"{name} (negative variance)")
    return bad


class CheckAggregate:
    """Skip the round, keeping the previous model, when the aggregate holds invalid numbers (module doc)."""

    name = Stage.CHECK

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        if rs.new_state is None:
            raise RoundFailed("the check needs an aggregated model")
        bad = invalid_tensors(rs.new_state)
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            # the same replies would give the same sum: skip the round rather than retry it
            raise RoundFailed(f"aggregate refused: {shown}", retry=False)
