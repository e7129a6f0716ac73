"""Whole federations on Flower's Simulation Engine: a 2-round run, and interrupt + resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastionfl.config import RunConfig
from bastionfl.simulations.simulate import run_simulated


def _cfg(**kw: object) -> RunConfig:
    base = {"num_clients": 3, "rounds": 2, "seed": 3}
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def two_round_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("sim")
    return out, run_simulated(_cfg(), out)


def test_two_round_federation_writes_metrics_and_plot(two_round_run: tuple[Path, list[dict]]) -> None:
    out, rounds = two_round_run
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        for key in ("round", "accuracy", "loss", "time_s", "bytes_up", "bytes_down"):
            assert key in r
        assert r["bytes_up"] > 100_000 and r["bytes_down"] > 100_000  # three CNN uploads and downloads
        assert set(r["stages"]) == {"sample", "train", "aggregate", "evaluate"}
    assert rounds[1]["accuracy"] > 0.2  # learning happened (chance is 0.1)
    data = json.loads((out / "metrics.json").read_text())
    assert data["status"] == "completed" and data["rounds"] == rounds
    assert (out / "accuracy.png").stat().st_size > 5000 and (out / "checkpoint.pt").exists()


def test_interrupt_and_resume_lists_every_round_once(tmp_path: Path, two_round_run: tuple[Path, list[dict]]) -> None:
    first = run_simulated(_cfg(), tmp_path, stop_after=1)
    assert [r["round"] for r in first] == [1]
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "stopped after round 1"
    resumed = run_simulated(_cfg(), tmp_path, resume=True)
    assert [r["round"] for r in resumed] == [1, 2]
    # seeded per (seed, round, client): the resumed run reproduces the uninterrupted one
    _, straight = two_round_run
    assert resumed[1]["accuracy"] == pytest.approx(straight[1]["accuracy"], abs=1e-6)
