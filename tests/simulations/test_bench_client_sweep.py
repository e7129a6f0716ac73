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


def test_predictions_client_flat_in_clients_server_linear_and_sizes_exact():
    from bastionfl.simulations.bench_client.he_adapter import wire_sizes

    small, big = predicted_peak_mb(1_000_000, "lean", 3), predicted_peak_mb(1_000_000, "lean", 100)
    assert big["decrypt_down_mb"] < 1.1 * small["decrypt_down_mb"]  # the client's download does not grow with n
    assert big["server"] > 20 * small["server"] / 3 * 0.9  # the server keeps every member's c1
    assert predicted_peak_mb(10_000_000, "precise", 3)["client"] > predicted_peak_mb(10_000_000, "lean", 3)["client"]
    s = wire_sizes("lean", 1_000_000, 30)
    assert 0.9 * s.update_bytes < s.decrypt_down_bytes < 1.2 * s.update_bytes


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


def test_server_growth_tiny_federation():
    from bastionfl.simulations.bench_client.growth import STAGES

    result = run_server_growth([3, 4], length=20_000, progress=lambda s: None)
    rows = {r["clients"]: r for r in result["rows"]}
    assert set(rows) == {3, 4}
    for row in rows.values():
        assert "error" not in row, row
        assert tuple(row["stages"]) == STAGES
        assert row["decoded_length"] == 20_000
    assert rows[4]["confirmation_bytes"] > rows[3]["confirmation_bytes"] > 0


def test_server_growth_skips_what_the_budget_cannot_hold(capsys):
    result = run_server_growth([1000], length=1_000_000, budget_mb=100, progress=lambda s: None)
    assert "above the 100 MB budget" in result["rows"][0]["skipped"]
    assert cli(["bench", "server", "--params", "1"]) == 2
    assert cli(["bench", "client-sweep", "--sizes", "x"]) == 2
    capsys.readouterr()


def test_wire_size_model_matches_a_real_round_elsewhere_on_the_grid():
    """The sweep's predictions rest on sizes fitted from three small rounds: a fourth round, at another length and
    federation size, has exactly the predicted message sizes."""
    from bastionfl.simulations.bench_client import he_adapter as he

    length = 3 * he.params_of("lean").floats_per_ciphertext - 5
    s = he.wire_sizes("lean", length, 5)
    assert (s.update_bytes, s.proposal_bytes, s.confirmation_bytes, s.share_bytes) == he.round_sizes("lean", length, 5)


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    rc = cli(["bench", "client-sweep", "--sizes", "10000", "--he", "none", "--clients", "3", "--dataset",
              "fashion-mnist", "--data-dir", str(tmp_path / "nodata"), "--out-dir", str(tmp_path),
              "--results", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("bastionfl bench client-sweep:")], err
