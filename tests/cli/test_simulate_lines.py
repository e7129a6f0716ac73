"""What a round line of ``bastionfl simulate`` says about RNP: how many channels it pruned, or that it pruned none."""

from __future__ import annotations

from bastionfl.cli.simulate import _rnp_note


def test_round_line_names_pruned_channels_or_says_none_were_pruned() -> None:
    report = {"bn_channels": 464, "pruned_channels": 7, "pruned_channels_total": 9}
    assert _rnp_note({"repair_outcome": "accepted", "repair": report}) == ", RNP pruned 9 of 464 BN channels"
    nothing = {"bn_channels": 160, "pruned_channels": 0, "pruned_channels_total": 0}
    assert _rnp_note({"repair_outcome": "accepted", "repair": nothing}) == ", RNP pruned nothing (160 BN channels)"
    assert "undone" in _rnp_note({"repair_outcome": "discarded", "repair": report})
    assert _rnp_note({"repair_outcome": "accepted", "repair": {"defense": "finetune"}}) == ""
    fp = {"defense": "fineprune", "channels": 64, "pruned_channels": 25, "layer": "stage3.2"}
    line = _rnp_note({"repair_outcome": "accepted", "repair": fp})
    assert line == ", fine-pruning pruned 25 of 64 channels of stage3.2"
    assert "undone" in _rnp_note({"repair_outcome": "discarded", "repair": fp})
