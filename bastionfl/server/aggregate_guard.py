"""Clip and noise the aggregate (CRFL-style, Xie et al. 2021): a backdoor defense that holds under encryption.

Under secure aggregation the server never sees one client's update, only the decrypted aggregate, so defenses that
inspect updates (norms per client, clustering) do not apply. What it can bound is the aggregate itself: the round's
change of the global model, ``delta = new - old`` over the model's parameters (BN statistics and counters are left
as aggregated), is scaled down to the L2 norm ``aggregate_clip`` when it is larger, and Gaussian noise of std
``aggregate_noise`` is added to every parameter (seeded by seed and round). Attacker: clients that boost their
update to replace the model (Bagdasaryan et al. 2020); a boost of ``b`` multiplies their share of ``delta`` by
``b``, and the clip caps how far any one round can move the model, whoever sent it. With
``aggregate_clip_adaptive = m`` the bound is ``m`` times the median norm of the earlier rounds' aggregate updates
(no clip in round 1; ``aggregate_clip_window = K`` takes the median over the last K rounds only, since the norms
shrink as training converges), so the server needs no model-specific constant: a round that moves the model much
further than the federation has been moving it is scaled back. Cost: benign rounds whose
update is larger than the bound are slowed too (early rounds of training from scratch), and the noise costs
accuracy in proportion to its std.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Any, ClassVar

import torch

from bastionfl.protocol import Stage
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext

__all__ = ["ClipAggregate", "ClipState", "clip_and_noise", "clip_bound"]


@dataclass
class ClipState:
    """The norms of the earlier rounds' aggregate updates (for the adaptive bound), checkpointed."""

    checkpoint_name: ClassVar[str] = "aggregate_norms"
    norms: dict[str, float] = field(default_factory=dict)

    def to_checkpoint(self) -> dict[str, Any]:
        return dict(self.norms)

    def restore(self, saved: dict[str, Any]) -> None:
        self.norms = {str(k): float(v) for k, v in saved.items()}


def clip_bound(fixed: float, adaptive: float, earlier_norms: list[float]) -> float:
    """The round's bound: the smaller of ``fixed`` and ``adaptive`` x median of earlier norms (0: no bound)."""
    bounds = [fixed] if fixed > 0 else []
    if adaptive > 0 and earlier_norms:
        bounds.append(adaptive * median(earlier_norms))
    return min(bounds) if bounds else 0.0


def clip_and_noise(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor], params: set[str], bound: float,
                   noise: float, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], float, float]:
    """``new`` with its parameter update clipped to L2 norm ``bound`` (0: no clip) and noised; (state, norm, scale).

    BN statistics and counters pass as aggregated: they estimate the data's statistics, and scaling them back with
    the weights slowed every clipped benign round (measured: docs/results-image.md, "The boosted attack").
    """
    names = [n for n in new if n in params and new[n].is_floating_point()]
    norm = float(torch.sqrt(sum(((new[n] - old[n]).double() ** 2).sum() for n in names))) if names else 0.0
    scale = min(1.0, bound / norm) if bound > 0 and norm > 0 else 1.0
    out = dict(new)
    for n in names:
        t = old[n] + scale * (new[n] - old[n])
        if noise > 0:
            t = t + noise * torch.randn(t.shape, generator=generator, dtype=t.dtype)
        out[n] = t
    return out, norm, scale


class ClipAggregate:
    """Bound the round's aggregate update and add noise (module doc); records the norm and the clip factor."""

    name = Stage.CLIP

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        if rs.new_state is None:
            raise RoundFailed("clipping needs an aggregated model")
        d = ctx.cfg.defense
        state = ctx.states.get(ClipState)
        earlier = [v for k, v in sorted(state.norms.items(), key=lambda kv: int(kv[0])) if int(k) < rs.server_round]
        if d.aggregate_clip_window:
            earlier = earlier[-d.aggregate_clip_window:]
        bound = clip_bound(d.aggregate_clip, d.aggregate_clip_adaptive, earlier)
        params = {n for n, _ in ctx.new_model().named_parameters()}
        gen = torch.Generator().manual_seed(ctx.cfg.federation.seed * 1_000_033 + rs.server_round)
        rs.new_state, norm, scale = clip_and_noise(rs.global_state, rs.new_state, params, bound,
                                                   d.aggregate_noise, gen)
        state.norms[str(rs.server_round)] = norm
        rs.metrics["aggregate_clip"] = {"update_norm": norm, "scale": scale, "bound": bound,
                                        "noise": d.aggregate_noise}
