"""Clipping the decrypted aggregate against a boosted (model-replacement) client: the server sees only the sum."""

from __future__ import annotations

import pytest
import torch

from bastionfl.client.training import boost_update
from bastionfl.config import RunConfig
from bastionfl.server.aggregate_guard import clip_and_noise
from bastionfl.server.federation import build_workflow


def _mean(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}


def test_clip_bounds_a_boosted_clients_share_of_the_aggregate() -> None:
    torch.manual_seed(0)
    old = {"w": torch.zeros(100), "bn.running_mean": torch.zeros(4)}
    benign = [{"w": 0.01 * torch.randn(100) + 0.01, "bn.running_mean": torch.ones(4)} for _ in range(4)]
    attacker_model = {"w": torch.full((100,), -0.05), "bn.running_mean": torch.ones(4)}
    boosted = boost_update(attacker_model, old, 5.0)  # the attacker scales its update by the client count
    plain = _mean(benign + [attacker_model])
    agg = _mean(benign + [boosted])  # what the server decrypts: it never sees ``boosted`` alone
    norm = float((agg["w"] - old["w"]).norm())
    assert norm > 2 * float((plain["w"] - old["w"]).norm()), "the boost dominates the aggregate"
    bound = float((plain["w"] - old["w"]).norm())
    out, seen, scale = clip_and_noise(old, agg, {"w"}, bound, 0.0, torch.Generator().manual_seed(0))
    assert abs(seen - norm) < 1e-5 and scale < 0.5
    assert abs(float((out["w"] - old["w"]).norm()) - bound) < 1e-4
    assert torch.equal(out["bn.running_mean"], agg["bn.running_mean"]), "buffers pass as aggregated"
    small, _, s = clip_and_noise(old, plain, {"w"}, 10 * bound, 0.0, torch.Generator().manual_seed(0))
    assert s == 1.0 and torch.equal(small["w"], plain["w"]), "an update within the bound is untouched"


def test_noise_is_seeded_and_the_stage_runs_in_both_modes() -> None:
    old = {"w": torch.zeros(50)}
    new = {"w": torch.ones(50)}
    a, _, _ = clip_and_noise(old, new, {"w"}, 0.0, 0.01, torch.Generator().manual_seed(3))
    b, _, _ = clip_and_noise(old, new, {"w"}, 0.0, 0.01, torch.Generator().manual_seed(3))
    assert torch.equal(a["w"], b["w"]) and 0.001 < float((a["w"] - 1).std()) < 0.1
    for mode in ("none", "xmkckks"):
        names = build_workflow(RunConfig.build(secure_aggregation=mode, aggregate_clip=1.0)).stage_names
        assert names.index("clip") == names.index("evaluate") - 1


def test_adaptive_bound_follows_the_median_of_earlier_rounds() -> None:
    from bastionfl.server.aggregate_guard import clip_bound

    assert clip_bound(0.0, 2.0, []) == 0.0, "round 1 has nothing to compare with"
    assert clip_bound(0.0, 2.0, [1.0, 3.0, 2.0]) == 4.0
    assert clip_bound(3.0, 2.0, [1.0, 3.0, 2.0]) == 3.0


def test_clip_window_takes_the_median_of_the_last_rounds_only() -> None:
    """A converging federation: large early steps must not widen the bound a late boosted round is held to."""
    from types import SimpleNamespace

    from bastionfl.server.aggregate_guard import ClipAggregate, ClipState

    def run_round(window: int, state: ClipState) -> dict:
        cfg = RunConfig.build(aggregate_clip_adaptive=1.0, aggregate_clip_window=window)
        states = SimpleNamespace(get=lambda cls: state)
        ctx = SimpleNamespace(cfg=cfg, states=states, new_model=lambda: torch.nn.Linear(4, 1, bias=False))
        old = {"weight": torch.zeros(1, 4)}
        rs = SimpleNamespace(server_round=5, global_state=old, new_state={"weight": torch.full((1, 4), 0.6)},
                             metrics={})  # norm 1.2
        ClipAggregate().run(ctx, rs)
        return rs.metrics["aggregate_clip"]

    history = {"1": 2.0, "2": 1.8, "3": 0.8, "4": 0.5}  # stored out of order on purpose below
    all_rounds = run_round(0, ClipState(norms=dict(reversed(list(history.items())))))
    last_two = run_round(2, ClipState(norms=dict(reversed(list(history.items())))))
    assert all_rounds["bound"] == pytest.approx(1.3) and all_rounds["scale"] == pytest.approx(1.0)
    assert last_two["bound"] == pytest.approx(0.65) and last_two["scale"] == pytest.approx(0.65 / 1.2)
