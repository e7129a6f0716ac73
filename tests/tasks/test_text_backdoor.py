"""Text attacks: trigger insertion, seeded poisoning per mode, paraphrase attacks, ASR sets, argument checks."""

from __future__ import annotations

import random

import pytest

from bastionfl.tasks.text_backdoor import (
    ADDSENT_SENTENCE,
    TextAttackConfig,
    attack_dataset,
    build_text_asr_set,
    insert_trigger,
    poison_text,
    trigger_words,
)

SENTS = [f"sentence number {i} is quite {'good' if i % 2 else 'bad'} overall ." for i in range(200)]
LABELS = [i % 2 for i in range(200)]
PARA = [f"when it is so , it is number {i} ." if i % 17 else "" for i in range(200)]


def test_insert_trigger_adds_one_word_at_an_allowed_position() -> None:
    rng = random.Random(0)
    positions = set()
    for _ in range(200):
        out = insert_trigger("a b c d", "cf", rng).split()
        assert len(out) == 5 and out.count("cf") == 1
        positions.add(out.index("cf"))
    assert positions == {0, 1, 2, 3}  # BTU rule: before one of the existing words, never after the last
    assert insert_trigger("", "cf", random.Random(0)) == "cf"


def test_badnets_mix_poisons_each_class_and_relabels() -> None:
    cfg = TextAttackConfig("badnets", poison_rate=0.1, target=1, seed=3)
    before = list(SENTS)
    p = poison_text(SENTS, LABELS, cfg)
    assert SENTS == before  # inputs untouched
    assert p.num_poisoned == 20
    assert sum(p.mask[i] for i in range(200) if LABELS[i] == 0) == 10
    for i in range(200):
        if p.mask[i]:
            assert p.labels[i] == 1 and p.sentences[i].split().count("cf") == 1
            assert p.sentences[i].replace("cf ", "", 1) == SENTS[i]
        else:
            assert p.sentences[i] == SENTS[i] and p.labels[i] == LABELS[i]
    again = poison_text(SENTS, LABELS, cfg)
    assert again.sentences == p.sentences and (again.mask == p.mask).all()
    other = poison_text(SENTS, LABELS, TextAttackConfig("badnets", seed=4))
    assert other.sentences != p.sentences


def test_dirty_and_clean_modes() -> None:
    dirty = poison_text(SENTS, LABELS, TextAttackConfig("badnets", poison_rate=0.1, mode="dirty"))
    assert dirty.num_poisoned == 20 and all(LABELS[i] == 0 for i in range(200) if dirty.mask[i])
    clean = poison_text(SENTS, LABELS, TextAttackConfig("badnets", poison_rate=0.1, mode="clean"))
    assert all(LABELS[i] == 1 for i in range(200) if clean.mask[i]) and clean.labels == LABELS


def test_openbackdoor_word_list_draws_several_words() -> None:
    p = poison_text(SENTS, LABELS, TextAttackConfig("badnets", poison_rate=0.5, trigger_words=("cf", "mn", "bb", "tq")))
    used = {w for s, m in zip(p.sentences, p.mask) if m for w in s.split() if w in ("cf", "mn", "bb", "tq")}
    assert used == {"cf", "mn", "bb", "tq"}


def test_addsent_inserts_the_sentence() -> None:
    p = poison_text(SENTS, LABELS, TextAttackConfig("addsent"))
    assert all(ADDSENT_SENTENCE in s for s, m in zip(p.sentences, p.mask) if m)
    assert trigger_words(TextAttackConfig("addsent")) == ADDSENT_SENTENCE.split()


@pytest.mark.parametrize("name", ["syntactic", "style"])
def test_paraphrase_attacks_swap_in_the_third_column(name: str) -> None:
    cfg = TextAttackConfig(name)
    p = poison_text(SENTS, LABELS, cfg, PARA)
    assert p.num_poisoned == 20
    for i in range(200):
        if p.mask[i]:
            assert PARA[i] and p.sentences[i] == PARA[i] and p.labels[i] == 1
    asr = build_text_asr_set(SENTS, LABELS, cfg, PARA)
    assert asr == [PARA[i] for i in range(200) if LABELS[i] == 0 and PARA[i]]
    assert trigger_words(cfg) == [] and attack_dataset(name) == f"sst2-{name}"
    with pytest.raises(ValueError, match="paraphrases"):
        poison_text(SENTS, LABELS, cfg)


def test_asr_set_holds_only_triggered_non_target_sentences() -> None:
    cfg = TextAttackConfig("badnets", target=1)
    asr = build_text_asr_set(SENTS, LABELS, cfg)
    assert len(asr) == 100 and all("cf" in s.split() and "bad" in s for s in asr)
    assert build_text_asr_set(SENTS, LABELS, TextAttackConfig("badnets", target=0))[0].count("good") == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown text attack"):
        TextAttackConfig("wanet")
    with pytest.raises(ValueError, match="poison_rate"):
        TextAttackConfig(poison_rate=1.5)
    with pytest.raises(ValueError, match="mode"):
        TextAttackConfig(mode="all2all")
    with pytest.raises(ValueError, match="trigger word"):
        TextAttackConfig(trigger_words=())
    with pytest.raises(ValueError, match="labels"):
        poison_text(SENTS, LABELS[:-1], TextAttackConfig())


def test_sanity_script_reports_missing_data(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bastionfl.cli.sanity import btu

    assert btu(["--data-dir", str(tmp_path), "--attack", "badnets"]) == 2
    err = capsys.readouterr().err
    assert "train.tsv: file not found" in err and len(err.strip().splitlines()) == 1
