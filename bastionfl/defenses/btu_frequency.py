"""BTU's frequency-aware suspect ranking (``BTUConfig.ranking = "frequency"``; not in the paper).

The paper's exposure flags, besides the trigger, the tokens any classifier leans on most: punctuation, function
words and common sentiment words (``,``, ``the``, ``n``/``t`` of "n't", ``bad``, ``funny``). Cutting those rows to
the [PAD] embedding is where BTU's clean-accuracy loss comes from. The frequency ranking keeps the paper's rankings
(R1, R2, R3 and their top-k each, unchanged) and spares a suspect when it is frequent in either sense:

* **data**: in the client's own data it appears in at least a share ``freq_share`` of the sentences of *every*
  label. The sentences of a label other than the target look clean: a dirty-label trigger (BadNets, ``mix`` or
  ``dirty`` mode) relabels every sentence it sits in to the target, so the trigger's share in the other label's
  sentences is 0 whatever the poison rate, while ``,``/``the``/``film`` occur in every label;
* **prior**: its vocabulary id is below ``prior_ids``. BERT's uncased WordPiece vocabulary (MiniLM's) lists the
  single characters (ids 999-1995) and then whole words in descending corpus frequency from id 1996 (``the``,
  ``of``, ``and``, ...), so ids below 7,000 are the characters and about the 5,000 most frequent words and
  pieces. The rule holds only for a vocabulary ordered this way; ``prior_ids = 0`` turns it off.

Spared tokens are dropped, not replaced by the next-ranked ones (the trigger ranks at the top; refilling would cut
further, rarer tokens). The cost: a trigger made of frequent words (AddSent's "I watch this 3D movie") is spared
too, and an attacker who knows the rule can pick a frequent trigger word or also plant it in sentences of the other
label (a weaker backdoor); the paper's ranking has neither blind spot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["FREQUENCY_PRIOR_IDS", "FREQUENCY_SHARE", "min_label_share", "frequent_reason", "spare_frequent"]

FREQUENCY_SHARE = 0.02  # data rule: in >= 2 % of every label's sentences
FREQUENCY_PRIOR_IDS = 7000  # prior rule: ids below this in a frequency-ordered WordPiece vocabulary (BERT uncased)


def min_label_share(
    tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], ids: Sequence[int], *, max_len: int = 64
) -> dict[int, float]:
    """For each token id: the smallest, over the labels present, share of that label's sentences containing it.

    Counted once per sentence on the tokens the model sees (truncated to ``max_len``); a label with no sentence
    is not a label of this data. Why the minimum: a dirty-label trigger never sits in a non-target sentence.
    """
    if len(sentences) != len(labels):
        raise ValueError(f"{len(sentences)} sentences but {len(labels)} labels")
    wanted = {int(i) for i in ids}
    per_label: dict[int, int] = {}
    hits: dict[int, dict[int, int]] = {i: {} for i in wanted}
    enc = tokenizer(list(sentences), add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"]
    for row, y in zip(enc, labels):
        y = int(y)
        per_label[y] = per_label.get(y, 0) + 1
        for i in wanted.intersection(int(t) for t in row):
            hits[i][y] = hits[i].get(y, 0) + 1
    return {int(i): min((hits[int(i)].get(y, 0) / n for y, n in per_label.items()), default=0.0) for i in ids}


def frequent_reason(token_id: int, share: float, *, freq_share: float, prior_ids: int) -> str | None:
    """Why a suspect is spared (``"prior"``, ``"data"``, ``"prior+data"``) or None if it is cut; the rule above."""
    reasons = [name for name, hit in (("prior", int(token_id) < prior_ids), ("data", share >= freq_share)) if hit]
    return "+".join(reasons) or None


def spare_frequent(
    tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], suspects: Sequence[int], *,
    freq_share: float = FREQUENCY_SHARE, prior_ids: int = FREQUENCY_PRIOR_IDS, max_len: int = 64,
) -> tuple[list[int], dict[int, tuple[str, float]]]:
    """Split the paper's suspects into (kept, spared id -> (reason, min label share)); order of ``suspects`` kept."""
    if not 0 < freq_share <= 1:
        raise ValueError(f"freq_share must be in (0, 1], got {freq_share}")
    if prior_ids < 0:
        raise ValueError(f"prior_ids must be >= 0 (0 = no prior), got {prior_ids}")
    shares = min_label_share(tokenizer, sentences, labels, suspects, max_len=max_len)
    kept: list[int] = []
    spared: dict[int, tuple[str, float]] = {}
    for i in suspects:
        reason = frequent_reason(int(i), shares[int(i)], freq_share=freq_share, prior_ids=prior_ids)
        if reason is None:
            kept.append(int(i))
        else:
            spared[int(i)] = (reason, shares[int(i)])
    return kept, spared
