"""The HE benchmark runs end to end on a small vector and reports every field the docs table needs."""

from __future__ import annotations

import json

from bastionfl.simulations.bench_he import main

KEYS = {"keygen_s", "encrypt_s", "aggregate_s", "share_s", "fuse_s", "upload_bytes", "upload_ratio", "max_abs_error"}


def test_bench_he_json(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BASTIONFL_OPENFHE_PYTHON", str(tmp_path / "no-such-python"))
    out_file = tmp_path / "he.json"
    assert main(["--params", "20000", "--clients", "2", "--paillier-subset", "3", "--out", str(out_file)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert json.loads(out_file.read_text()) == out
    schemes = out["schemes"]
    for name in ("plaintext", "xmkckks_precise", "xmkckks_lean", "tenseal_single_key", "paillier"):
        assert KEYS <= set(schemes[name]), name
    assert schemes["xmkckks_precise"]["max_abs_error"] <= 1e-6
    assert schemes["xmkckks_lean"]["max_abs_error"] <= schemes["xmkckks_lean"]["expected_max_error"]
    assert schemes["tenseal_single_key"]["max_abs_error"] <= 1e-3
    assert schemes["paillier"]["extrapolated"] is True and schemes["paillier"]["subset"] == 3
    assert schemes["paillier"]["max_abs_error"] <= 1e-9
    assert schemes["xmkckks_lean"]["upload_ratio"] < schemes["xmkckks_precise"]["upload_ratio"]
    assert schemes["openfhe_threshold"]["status"] == "unavailable" and schemes["openfhe_threshold"]["reason"]
    assert out["params"] == 20000 and out["clients"] == 2


def test_bench_he_usage_error(capsys):
    assert main(["--clients", "1"]) == 2
    assert main(["--bogus"]) == 2
    capsys.readouterr()


def test_bench_he_threat_models(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BASTIONFL_OPENFHE_PYTHON", str(tmp_path / "no-such-python"))
    argv = ["--params", "3000", "--clients", "3", "--skip", "tenseal,paillier,openfhe", "--profiles", "lean",
            "--threat-models"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    runs = out["threat_models"]["lean"]
    assert set(runs) == {"honest-but-curious", "malicious", "malicious-colluding"}
    for name, run in runs.items():
        assert run["threat_model"] == name and run["clients"] == 3
        assert {"upload", "decrypt", "key"} <= set(run["upload_per_client_bytes"])
        assert run["download_per_client_bytes"]["decrypt"] > 0
        assert run["times"]["client_encrypt_commit_s"] > 0 and run["times"]["server_fuse_s"] > 0
        assert run["max_abs_error"] <= 1e-5
    assert runs["malicious"]["decrypt_download_over_upload"] <= 1.2
    assert "client_verify_and_share_s" in runs["malicious"]["times"]
    assert "client_reveal_s" in runs["malicious-colluding"]["times"]
