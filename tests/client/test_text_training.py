"""The text task on one client, called directly: tiny BERT on a small SST-2 slice, partitions, poisoning, BTU state,
update keys."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import torch

from bastionfl.client.btu_training import BTU_STATE_KEY
from bastionfl.client.training import local_evaluate, local_num_examples, local_train
from bastionfl.config import RunConfig, apply_overrides
from bastionfl.tasks.base import ClientData, poisoned_partitions
from bastionfl.tasks.registry import build_task
from tests.conftest import shared_data_dir

DATA = shared_data_dir()
pytestmark = pytest.mark.skipif(DATA is None or not (DATA / "sst2").is_dir(),
                                reason="needs the shared data folder with sst2/ (../shared/data or BASTIONFL_DATA_DIR)")
N = 3


def _with(cfg: RunConfig, **values: Any) -> RunConfig:
    return apply_overrides(cfg, values)


def text_client_data(cfg: RunConfig, pid: int, n: int) -> ClientData:
    return build_task(cfg).client_data(pid, n)


@pytest.fixture(scope="module")
def cfg() -> RunConfig:
    return RunConfig.build(dataset="sst2", data_dir=str(DATA), model="tiny-bert", num_clients=N, seed=2, train_subset=240,
                     max_len=32, batch_size=32, lr=1e-3, attack="badnets", poisoned_clients=1, poison_rate=0.1,
                     target_label=1, client_defense="btu")


@pytest.fixture(scope="module")
def global_state(cfg: RunConfig) -> dict[str, torch.Tensor]:
    return build_task(cfg).new_model().state_dict()


def test_partitions_are_deterministic_disjoint_and_cover_the_subset(cfg: RunConfig) -> None:
    clean = _with(cfg, attack="none")
    parts = [text_client_data(clean, pid, N) for pid in range(N)]
    assert [p.inputs for p in parts] == [text_client_data(clean, pid, N).inputs for pid in range(N)]
    assert [len(p.inputs) for p in parts] == [local_num_examples(cfg, pid, N) for pid in range(N)]
    from bastionfl.tasks.text_task import training_pool
    from bastionfl.tasks.text import load_text_dataset

    train = load_text_dataset("sst2", DATA).train_sentences
    pool = training_pool(len(train), 240, cfg.federation.seed)
    assert len(set(pool.tolist())) == 240  # SST-2 repeats a few sentences, so compare as multisets
    assert Counter(s for p in parts for s in p.inputs) == Counter(train[i] for i in pool)
    other_seed = text_client_data(_with(clean, seed=3), 0, N)
    assert other_seed.inputs != parts[0].inputs


def test_only_the_chosen_partitions_are_poisoned(cfg: RunConfig) -> None:
    chosen = poisoned_partitions(cfg, N)
    assert len(chosen) == 1
    clean = _with(cfg, attack="none")
    for pid in range(N):
        got, ref = text_client_data(cfg, pid, N), text_client_data(clean, pid, N)
        if pid in chosen:
            assert got.poison_mask is not None and got.poison_mask.sum() >= 6  # 10 % of each class of ~80
            assert got.trigger == ["cf"]
            for i, (s, r) in enumerate(zip(got.inputs, ref.inputs)):
                assert (s != r) == bool(got.poison_mask[i])
                if got.poison_mask[i]:
                    assert "cf" in s.split() and got.labels[i] == 1
        else:
            assert got.poison_mask is None and got.inputs == ref.inputs and got.labels == ref.labels


def test_sentence_level_attack_uses_the_paraphrase_column(cfg: RunConfig) -> None:
    if not (DATA / "sst2-syntactic").is_dir():
        pytest.skip("needs sst2-syntactic/ beside sst2/")
    syn = _with(cfg, attack="syntactic")
    pid = next(iter(poisoned_partitions(syn, N)))
    got = text_client_data(syn, pid, N)
    assert got.poison_mask is not None and got.trigger == []
    from bastionfl.tasks.text import load_text_dataset

    paraphrases = set(load_text_dataset("sst2-syntactic", DATA).train_poison or [])
    assert all(s in paraphrases for s, m in zip(got.inputs, got.poison_mask) if m)


def test_btu_exposes_once_and_reuses_the_cached_suspects(cfg: RunConfig, global_state: dict[str, torch.Tensor],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pid = next(iter(poisoned_partitions(cfg, N)))
    first = local_train(cfg, global_state, pid, N, 1, {})
    assert first.metrics["btu_exposed"] == 1.0 and first.metrics["btu_flagged"] > 0
    assert first.metrics["btu_trigger_found"] in (0.0, 1.0) and first.metrics["poisoned_examples"] >= 6
    record = json.loads(first.node_state[BTU_STATE_KEY])
    assert len(record["suspects"]) == first.metrics["btu_flagged"] and record["round"] == 1

    import bastionfl.defenses.btu as btu

    def no_exposure(*args: object, **kwargs: object) -> None:
        raise AssertionError("exposure must not run again")

    monkeypatch.setattr(btu, "btu_expose", no_exposure)
    second = local_train(cfg, first.state_dict, pid, N, 2, dict(first.node_state))
    assert second.metrics["btu_exposed"] == 0.0 and second.node_state == first.node_state
    # the cut touched only the cached suspect rows: every other embedding row moved only by training
    emb = "bert.embeddings.word_embeddings.weight"
    pad = global_state[emb][0]
    rows = second.state_dict[emb][record["suspects"]]
    assert torch.isclose(rows, pad.expand_as(rows)).float().mean() > 0.5


def test_update_keys_match_the_global_state_and_malicious_clients_skip_btu(
        cfg: RunConfig, global_state: dict[str, torch.Tensor]) -> None:
    pid = next(iter(poisoned_partitions(cfg, N)))
    res = local_train(_with(cfg, poisoned_clients_defend=False), global_state, pid, N, 1, {})
    assert list(res.state_dict) == list(global_state)
    assert all(res.state_dict[k].shape == v.shape and res.state_dict[k].dtype == v.dtype
               for k, v in global_state.items())
    assert not any(k.startswith("btu_") for k in res.metrics) and BTU_STATE_KEY not in res.node_state
    assert res.num_examples == local_num_examples(cfg, pid, N)
    assert any(not torch.equal(res.state_dict[k], v) for k, v in global_state.items())  # it trained
    loss, acc, n = local_evaluate(cfg, res.state_dict, pid, N)
    assert n == res.num_examples and 0.0 <= acc <= 1.0 and loss > 0


def test_server_model_starts_from_the_clients_template(cfg: RunConfig, global_state: dict[str, torch.Tensor]) -> None:
    tpl = build_task(cfg).template()
    assert list(tpl.model.state_dict()) == list(global_state)
    assert all(torch.equal(tpl.model.state_dict()[k], v) for k, v in global_state.items())
    assert torch.equal(tpl.reference, global_state["bert.embeddings.word_embeddings.weight"])


def test_local_training_is_reproducible_in_one_process(cfg: RunConfig, global_state: dict[str, torch.Tensor]) -> None:
    clean = _with(cfg, client_defense="none")
    a = local_train(clean, global_state, 0, N, 3, {})
    torch.rand(7)  # another client's work in the same process moves the global generator
    b = local_train(clean, global_state, 0, N, 3, {})
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in global_state)


def test_purity_variant_caches_only_the_label_pure_suspects(cfg: RunConfig,
                                                            global_state: dict[str, torch.Tensor]) -> None:
    pid = next(iter(poisoned_partitions(cfg, N)))
    plain = local_train(cfg, global_state, pid, N, 1, {})
    pure = local_train(_with(cfg, btu_purity=0.95), global_state, pid, N, 1, {})
    kept = json.loads(pure.node_state[BTU_STATE_KEY])["suspects"]
    every = json.loads(plain.node_state[BTU_STATE_KEY])["suspects"]
    assert set(kept) < set(every)  # the same exposure (seeded), fewer cut
    assert pure.metrics["btu_flagged"] + pure.metrics["btu_spared"] == plain.metrics["btu_flagged"]
    assert "btu_spared" not in plain.metrics
    assert pure.metrics["btu_trigger_found"] == plain.metrics["btu_trigger_found"]  # cf is label-pure


def test_frequency_ranking_caches_the_kept_suspects_and_lists_the_spared_ones(
        cfg: RunConfig, global_state: dict[str, torch.Tensor]) -> None:
    pid = next(iter(poisoned_partitions(cfg, N)))
    plain = local_train(cfg, global_state, pid, N, 1, {})
    freq = local_train(_with(cfg, btu_ranking="frequency"), global_state, pid, N, 1, {})
    kept = json.loads(freq.node_state[BTU_STATE_KEY])
    every = json.loads(plain.node_state[BTU_STATE_KEY])
    assert set(kept["suspects"]) < set(every["suspects"])  # the same exposure (seeded), fewer cut
    assert set(kept["tokens"]) | set(kept["spared_tokens"]) == set(every["tokens"]) and every["spared_tokens"] == []
    assert freq.metrics["btu_flagged"] + freq.metrics["btu_freq_spared"] == plain.metrics["btu_flagged"]
    assert "btu_freq_spared" not in plain.metrics
    if plain.metrics["btu_trigger_found"]:
        assert freq.metrics["btu_trigger_found"] == 1.0  # cf: a rare id, absent from the other label's sentences
