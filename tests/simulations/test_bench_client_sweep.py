"""The sweep's grid, predictions and rendering, and the server-growth harness on a tiny federation."""

from __future__ import annotations

import copy

import pytest

from bastionfl.cli.main import main as cli
from bastionfl.simulations.bench_client import BenchOptions
from bastionfl.simulations.bench_client.growth import run_server_growth
from bastionfl.simulations.bench_client.sweep import SweepSpec, predicted_peak_mb, render_sweep


def test_grid_runs_plaintext_once_per_size():
    spec = SweepSpec([10_000, 100_000], ["none", "lean"], [3, 30], BenchOptions())
    assert spec.points() == [(10_000, "none", 3), (10_000, "lean", 3), (10_000, "lean", 30),
                             (100_000, "none", 3), (100_000, "lean", 3), (100_000, "lean", 30)]


def test_predictions_grow_with_clients_and_size_and_request_dominates():
    small, big = predicted_peak_mb(1_000_000, "lean", 3), predicted_peak_mb(1_000_000, "lean", 100)
    assert big["client"] > small["client"] and big["request_mb"] > 30 * small["request_mb"] / 4 * 3
    assert predicted_peak_mb(10_000_000, "precise", 3)["client"] > predicted_peak_mb(10_000_000, "lean", 3)["client"]


def _fake_result(cpu: float, peak: float, ok: bool = True) -> dict:
    stage = {"ran": True, "ok": ok, "wall_s": cpu, "cpu_s": cpu, "peak_rss_mb": peak, "bytes_up": 10, "bytes_down": 20}
    stages = {s: dict(stage) for s in ("admission", "key_setup", "train", "encrypt", "decrypt_share")}
    if not ok:
        stages["decrypt_share"]["error"] = "out_of_memory"
    return {"stages": stages, "totals": {"ok": ok, "cpu_s": 5 * cpu, "wall_s": 5 * cpu, "peak_rss_mb": peak,
                                         "bytes_up": 50, "bytes_down": 100},
            "energy": {"projected_on_device": {"peak_rss_mb": peak - 150, "cpu_s": 20 * cpu,
                                               "energy_j_above_idle": 18 * cpu}}}


def test_render_writes_the_plot_and_a_table_with_failures_and_predictions(tmp_path):
    data = {"points": {
        "1000/lean/3": {"params": 1000, "he": "lean", "clients": 3, "result": _fake_result(1.0, 700)},
        "10000/lean/3": {"params": 10000, "he": "lean", "clients": 3, "result": _fake_result(2.0, 1200, ok=False)},
        "100000/lean/3": {"params": 100000, "he": "lean", "clients": 3, "predicted": {"client": 9000.0},
                          "skipped": "predicted"},
    }}
    table = render_sweep(copy.deepcopy(data), tmp_path, "bastionfl bench client-sweep --sizes 1000")
    assert (tmp_path / "bench-client-sweep.png").stat().st_size > 10_000
    assert "**out_of_memory**" in table and "≈9,000 predicted" in table
    assert table.startswith("Command: `bastionfl bench client-sweep --sizes 1000`")


def test_server_growth_tiny_federation_both_designs():
    result = run_server_growth([2, 3], length=20_000, modes=("today", "streaming"), progress=lambda s: None)
    rows = {(r["mode"], r["clients"]): r for r in result["rows"]}
    assert set(rows) == {("today", 2), ("today", 3), ("streaming", 2), ("streaming", 3)}
    for row in rows.values():
        assert "error" not in row, row
        assert set(row["stages"]) == {"key_aggregation", "aggregation", "request", "fusion"}
        assert row["decoded_length"] == 20_000
    assert rows[("today", 3)]["request_bytes"] > rows[("today", 2)]["request_bytes"] > 0
    assert rows[("streaming", 3)]["request_bytes"] == 0


def test_server_growth_skips_what_the_budget_cannot_hold(capsys):
    result = run_server_growth([1000], length=1_000_000, modes=("today",), budget_mb=100, progress=lambda s: None)
    assert "above the 100 MB budget" in result["rows"][0]["skipped"]
    assert cli(["bench", "server", "--modes", "tomorrow"]) == 2
    assert cli(["bench", "client-sweep", "--sizes", "x"]) == 2
    capsys.readouterr()


def test_streaming_key_aggregation_gives_the_library_key_and_refuses_duplicates():
    from bastionfl import crypto as xc
    from bastionfl.simulations.bench_client import he_adapter as he

    params = he.params_of("lean")
    shares = [he.new_key_share(params, "stream-keys", 0)[1] for _ in range(3)]
    _, expected = he.aggregate_key(params, "stream-keys", 0, shares)
    acc = he.StreamingKeyAggregation(params, "stream-keys", 0)
    for blob in shares:
        acc.add(blob)
    assert acc.result().to_bytes() == expected
    with pytest.raises(xc.EpochError):
        acc.add(shares[0])
    other = he.StreamingKeyAggregation(params, "stream-keys", 1)
    with pytest.raises(xc.CryptoError):
        other.add(shares[0])  # built on another epoch's a
