"""The rounds benchmark's summary keeps each round's figures the docs quote: stage times, restarts, re-proposals,
dropouts, upload set and shares, whether the round was skipped."""

from __future__ import annotations

from bastionfl.simulations.bench_rounds import summarise


def _round(number: int, **extra: object) -> dict:
    return {"round": number, "time_s": 10.0 * number, "accuracy": 0.1, "bytes_up": 100, "bytes_down": 200,
            "stages": {"train": 1.0 * number, "consistency": 0.5}, "restarts": 0, "dropouts": {"consistency": 2},
            "client_bytes": {"7": {"stages": {"train": {"down": 10, "up": 20}}}}, "loss": 2.3, **extra}


def test_per_round_keeps_reproposals_and_stage_times():
    out = summarise([_round(1, reproposals=1, uploaders=80), _round(2), _round(3, skipped="too few signers")])
    first, second, third = out["per_round"]
    assert first["reproposals"] == 1 and first["uploaders"] == 80 and "reproposals" not in second
    assert first["stages"] == {"train": 1.0, "consistency": 0.5} and second["stages"]["train"] == 2.0
    assert third["skipped"] == "too few signers" and "loss" not in first and "client_bytes" not in first
    assert out["round_s_steady"] == 25.0 and out["stage_s_steady"]["train"] == 2.5
    assert out["stage_bytes_per_client"] == {"train": {"down": 10, "up": 20}}
