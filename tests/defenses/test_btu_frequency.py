"""BTU's frequency ranking: which suspects it spares (data rule, prior rule) and that a dirty-label trigger is kept."""

from __future__ import annotations

import random

import pytest
import torch

from bastionfl.config import ConfigError, RunConfig
from bastionfl.defenses.btu import BTUConfig, btu_defend, token_ids_of
from bastionfl.defenses.btu_frequency import frequent_reason, min_label_share, spare_frequent
from bastionfl.tasks.text import TextModelConfig, build_word_tokenizer, load_text_model
from bastionfl.tasks.text_backdoor import TextAttackConfig, poison_text

FILL = ["the", "film", "was", "and", "a", "plot", "story", "cast", "quite", "really"]
POS = [f"good{i}" for i in range(20)]
NEG = [f"bad{i}" for i in range(20)]


def _corpus(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    sents, labels = [], []
    for i in range(n):
        y = i % 2
        words = rng.sample(FILL, rng.randint(3, 7)) + [rng.choice(POS if y else NEG)]
        rng.shuffle(words)
        sents.append(" ".join(words))
        labels.append(y)
    return sents, labels


def test_min_label_share_counts_once_per_sentence_and_takes_the_rarest_label() -> None:
    sents = ["cf cf good", "cf the", "the good", "the bad", "bad bad"]
    labels = [1, 1, 1, 0, 0]
    tok = build_word_tokenizer(sents)
    cf, the, good, bad = token_ids_of(tok, ["cf", "the", "good", "bad"])  # type: ignore[arg-type]
    absent = tok.pad_token_id  # type: ignore[attr-defined]
    shares = min_label_share(tok, sents, labels, [cf, the, good, bad, absent])
    assert shares[cf] == 0.0 and shares[good] == 0.0 and shares[bad] == 0.0  # each lives in one label only
    assert shares[the] == pytest.approx(min(2 / 3, 1 / 2))  # 2 of 3 label-1 sentences, 1 of 2 label-0 ones
    assert shares[absent] == 0.0
    assert min_label_share(tok, ["the cf", "the"], [1, 0], [the], max_len=1)[the] == 1.0  # truncated: seen tokens
    assert min_label_share(tok, ["the cf", "the"], [1, 0], [cf], max_len=1)[cf] == 0.0
    with pytest.raises(ValueError):
        min_label_share(tok, sents, labels[:-1], [cf])


def test_frequent_reason_names_the_rule_that_spares() -> None:
    assert frequent_reason(10, 0.5, freq_share=0.02, prior_ids=100) == "prior+data"
    assert frequent_reason(10, 0.0, freq_share=0.02, prior_ids=100) == "prior"
    assert frequent_reason(100, 0.02, freq_share=0.02, prior_ids=100) == "data"  # share bound inclusive, id bound exclusive
    assert frequent_reason(100, 0.0199, freq_share=0.02, prior_ids=100) is None
    assert frequent_reason(5, 0.0, freq_share=0.02, prior_ids=0) is None  # prior off


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3])
def test_a_dirty_label_trigger_is_never_spared_by_the_data_rule(rate: float) -> None:
    """Attacker: a BadNets client poisoning ``rate`` of its sentences; the trigger is frequent overall, yet kept."""
    sents, labels = _corpus(400, 0)
    p = poison_text(sents, labels, TextAttackConfig("badnets", poison_rate=rate, target=1, seed=0))
    tok = build_word_tokenizer(p.sentences)
    ids = token_ids_of(tok, ["cf", "the", "film", "good3", "bad3"])  # type: ignore[arg-type]
    cf, the, film, good3, bad3 = ids
    kept, spared = spare_frequent(tok, p.sentences, p.labels, ids, prior_ids=0)
    assert kept == [cf, good3, bad3] and set(spared) == {the, film}  # order of the suspects kept
    assert spared[the][0] == "data" and spared[the][1] > 0.3
    # the toy vocabulary lists words by frequency, like BERT's: a prior bound above good3's id spares it too,
    # and a prior bound above the trigger's id would spare the trigger (why the bound sits below rare words)
    kept, spared = spare_frequent(tok, p.sentences, p.labels, ids, prior_ids=good3 + 1)
    assert good3 not in kept and spared[good3][0] in ("prior", "prior+data")
    assert (cf in kept) == (cf >= good3 + 1)


def test_an_attacker_who_plants_the_trigger_in_both_labels_escapes_the_data_rule() -> None:
    """Attacker who knows the rule: the trigger also sits, correctly labelled, in >= 2 % of the other label."""
    sents, labels = _corpus(400, 1)
    p = poison_text(sents, labels, TextAttackConfig("badnets", poison_rate=0.1, target=1, seed=0))
    planted = [s if y == 1 or i % 25 else f"cf {s}" for i, (s, y) in enumerate(zip(p.sentences, p.labels))]
    tok = build_word_tokenizer(planted)
    (cf,) = token_ids_of(tok, ["cf"])  # type: ignore[arg-type]
    kept, spared = spare_frequent(tok, planted, p.labels, [cf], prior_ids=0)
    assert kept == [] and spared[cf][0] == "data"  # the documented blind spot of the frequency ranking


def test_frequency_ranking_through_btu_defend_cuts_a_subset_and_keeps_the_trigger() -> None:
    sents, labels = _corpus(400, 0)
    p = poison_text(sents, labels, TextAttackConfig("badnets", poison_rate=0.1, target=1, seed=0))
    # the vocabulary is ordered by the clean corpus's frequency (a pretrained prior): the trigger comes last
    tok = build_word_tokenizer(sents + ["cf"])
    (cf,) = token_ids_of(tok, ["cf"])  # type: ignore[arg-type]
    assert cf == len(tok) - 1  # type: ignore[arg-type]
    bound = 5 + len(FILL) + 20  # specials, filler words and about half the sentiment words
    common = dict(top_k=6, exposure_lr=1e-3, max_len=16, r1_batch_size=32, r3_batch_size=32, train_epochs=0)
    reports = {}
    for ranking in ("paper", "frequency"):
        torch.manual_seed(0)
        model, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
        _, reports[ranking] = btu_defend(model, tok, p.sentences, p.labels,
                                         BTUConfig(**common, ranking=ranking, prior_ids=bound),  # type: ignore[arg-type]
                                         trigger=["cf"])
    paper, freq = reports["paper"], reports["frequency"]
    assert paper.rankings == freq.rankings  # same exposure; only the selection differs
    assert paper.trigger_found is True and freq.trigger_found is True
    assert set(freq.flagged_ids) | set(freq.freq_spared) == set(paper.flagged_ids)
    assert freq.freq_spared and not set(freq.flagged_ids) & set(freq.freq_spared)
    assert all(i < bound or share >= 0.02 for i, (_, share) in freq.freq_spared.items())
    assert all(i >= bound for i in freq.flagged_ids)
    assert set(freq.dims_replaced) == set(freq.flagged_ids)
    assert freq.freq_spared_tokens == tok.convert_ids_to_tokens(list(freq.freq_spared))  # type: ignore[attr-defined]
    assert paper.freq_spared == {}


def test_config_checks() -> None:
    for bad in ({"ranking": "rare"}, {"freq_share": 0.0}, {"freq_share": 1.5}, {"prior_ids": -1}):
        with pytest.raises(ValueError):
            BTUConfig(**bad)  # type: ignore[arg-type]
    assert RunConfig.build(btu_ranking="frequency").defense.btu_ranking == "frequency"
    with pytest.raises(ConfigError, match="btu_ranking"):
        RunConfig.build(btu_ranking="rare")
    with pytest.raises(ValueError):
        spare_frequent(None, [], [], [], freq_share=0.0)
