"""ABL in a federation: a victim of data poisoning (honest owner, BadNets data) isolates its poison, benign clients
isolate nothing; one isolation round at round 2 (before the diluted trigger is learned) isolates nothing."""

from __future__ import annotations

import pytest
import torch

from bastionfl.client.training import local_train
from bastionfl.config.run import RunConfig, apply_overrides
from bastionfl.tasks.base import poisoned_partitions
from bastionfl.tasks.registry import build_task

pytestmark = pytest.mark.slow  # ten in-process FedAvg rounds of five clients (~15 s)


def _federate(**overrides: object) -> dict[int, dict[str, float]]:
    """FedAvg over ``local_train`` (the simulation's client code); each client's last-round metrics."""
    cfg = apply_overrides(RunConfig(), {"attack": "badnets", "poisoned_clients": 1, "poison_rate": 0.1,
                                        "client_defense": "abl", "rounds": 10, "seed": 0, **overrides})
    n = cfg.federation.num_clients
    torch.manual_seed(cfg.federation.seed)
    global_state = build_task(cfg).new_model().state_dict()
    node_states: list[dict[str, str]] = [{} for _ in range(n)]
    last: dict[int, dict[str, float]] = {}
    for server_round in range(1, cfg.federation.rounds + 1):
        results = [local_train(cfg, global_state, c, n, server_round, node_states[c]) for c in range(n)]
        node_states = [r.node_state for r in results]
        total = sum(r.num_examples for r in results)
        global_state = {k: (sum(r.state_dict[k].double() * r.num_examples for r in results) / total).to(v.dtype)
                        for k, v in global_state.items()}
        last = {c: r.metrics for c, r in enumerate(results)}
    return last


def test_poisoned_client_isolates_its_poison_and_benign_clients_nothing() -> None:
    cfg = apply_overrides(RunConfig(), {"attack": "badnets", "poisoned_clients": 1, "seed": 0})
    (victim,) = poisoned_partitions(cfg, cfg.federation.num_clients)
    metrics = _federate(abl_isolation_rounds=8)
    assert metrics[victim]["isolation_recall"] >= 0.6 and metrics[victim]["isolation_precision"] >= 0.8
    assert all(m["isolated"] == 0.0 for c, m in metrics.items() if c != victim)
    early = _federate(abl_isolation_rounds=2)  # the trigger is not learned yet at round 2: nothing fires
    assert all(m["isolated"] == 0.0 for m in early.values())
