"""The auth benchmark runs end to end and reports every field the docs table needs."""

from __future__ import annotations

import json

from bastionfl.cli.bench import auth as main


def test_bench_auth_json(capsys):
    assert main(["--n", "50", "--http-n", "8", "--http-concurrency", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sizes"] == {"msg1": 114, "msg2": 80, "msg3": 32, "msg4": 32, "ack": 32}
    assert out["k_pseudonym"]["msg1"] == 66
    assert out["handshake_ms"] > 0 and out["ha_auth_per_s"] > 0
    assert out["http"]["n"] == 8 and out["http"]["ha_auth_per_s_http"] > 0
    assert len(out["machine"]["loadavg_before"]) == 3


def test_bench_auth_usage_error(capsys):
    assert main(["--n", "0"]) == 2
    assert main(["--bogus"]) == 2
    capsys.readouterr()
