"""``bastionfl bench client``: profiles, limit enforcement and its reporting, one real round end to end, and an
out-of-memory stage reported as a result rather than a crash or a hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bastionfl.cli.main import main as cli
from bastionfl.simulations.bench_client import (
    STAGES,
    BenchClientError,
    BenchOptions,
    get_device_profile,
    load_profiles,
    run_client_bench,
)
from bastionfl.simulations.bench_client.limits import Enforcer

STAGE_KEYS = {"ok", "wall_s", "cpu_s", "peak_rss_mb", "bytes_up", "bytes_down"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """One folder of prepared shards for the module (preparing one imports torch in a process of its own)."""
    return tmp_path_factory.mktemp("shards")


def test_shipped_profiles_name_their_limits_and_sources():
    profiles, ref = load_profiles()
    assert {"rpi4-class", "rpi-zero2-class", "jetson-nano-class", "desktop"} <= set(profiles)
    rpi4 = profiles["rpi4-class"]
    assert (rpi4.cores, rpi4.torch_threads, rpi4.memory_mb) == (1, 1, 1024)
    assert (profiles["rpi-zero2-class"].cores, profiles["rpi-zero2-class"].memory_mb) == (1, 512)
    assert (profiles["jetson-nano-class"].cores, profiles["jetson-nano-class"].memory_mb) == (2, 2048)
    assert profiles["desktop"].memory_mb == 0 and profiles["desktop"].cores == 0
    for p in profiles.values():
        assert p.power_source and p.score_source and p.load_w >= p.idle_w
    assert ref.paper_avg_power_w == 2.4 and ref.cpu_score > 0


def test_bad_profile_file_and_names_are_one_line_errors(tmp_path):
    with pytest.raises(BenchClientError, match="unknown device profile 'pi9'"):
        get_device_profile("pi9")
    bad = tmp_path / "devices.toml"
    bad.write_text('[reference]\nname = "x"\n')
    with pytest.raises(BenchClientError, match="missing 'cpu_score'"):
        load_profiles(bad)
    with pytest.raises(BenchClientError, match="cannot read"):
        load_profiles(tmp_path / "absent.toml")


def _fake_system(tmp_path: Path, mounts: list[str], own: list[str]) -> tuple[Path, Path]:
    """A /proc with the given mounts and own-cgroup lines, and the folder the fake hierarchies live in."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mounts").write_text("\n".join(mounts) + "\n")
    (proc / "self" / "cgroup").write_text("\n".join(own) + "\n")
    return proc, tmp_path / "cg"


def test_cgroup_v1_limits_are_written_and_named(tmp_path):
    proc, cg = _fake_system(tmp_path, [
        f"cgroup {tmp_path}/cg/memory cgroup rw,memory 0 0", f"cgroup {tmp_path}/cg/cpu cgroup rw,cpu 0 0",
        f"cgroup {tmp_path}/cg/cpuset cgroup rw,cpuset 0 0",
    ], ["4:memory:/box", "1:cpu:/", "3:cpuset:/"])
    for d in ("memory/box", "cpu", "cpuset"):
        (cg / d).mkdir(parents=True)
    (cg / "cpuset" / "cpuset.mems").write_text("0\n")
    profile, _ = get_device_profile("rpi4-class")
    enf = Enforcer(profile, "auto", proc=proc)
    enf.prepare("t1")
    by = {r.limit: r for r in enf.results}
    assert by["memory"].enforced and by["memory"].mechanism.startswith("cgroup v1 memory")
    assert (cg / "memory" / "box" / "bastionfl-t1" / "memory.limit_in_bytes").read_text() == str(1024 * 2**20)
    assert by["cores"].enforced and "cgroup v1 cpuset" in by["cores"].mechanism and "cpu quota" in by["cores"].mechanism
    assert (cg / "cpuset" / "bastionfl-t1" / "cpuset.cpus").read_text() == ",".join(map(str, enf.client_cpus))
    assert (cg / "cpu" / "bastionfl-t1" / "cpu.cfs_quota_us").read_text() == "100000"
    assert enf.as_cap_mb == 0  # the cgroup holds memory: no RLIMIT_AS fallback


def test_cgroup_v2_preferred_when_it_offers_the_controllers(tmp_path):
    proc, cg = _fake_system(tmp_path, [f"cgroup2 {tmp_path}/cg cgroup2 rw 0 0"], ["0::/"])
    cg.mkdir()
    (cg / "cgroup.controllers").write_text("cpuset cpu memory\n")
    (cg / "cgroup.subtree_control").write_text("\n")
    profile, _ = get_device_profile("rpi-zero2-class")
    enf = Enforcer(profile, "auto", proc=proc)
    enf.prepare("t2")
    by = {r.limit: r for r in enf.results}
    assert by["memory"].mechanism.startswith("cgroup v2 memory")
    assert (cg / "bastionfl-t2" / "memory.max").read_text() == str(512 * 2**20)
    assert (cg / "bastionfl-t2" / "cpu.max").read_text() == "100000 100000"


def test_without_cgroups_the_fallbacks_are_named_and_a_cgroup_only_request_is_reported_unenforced(tmp_path):
    proc, cg = _fake_system(tmp_path, [], [])
    profile, _ = get_device_profile("rpi4-class")
    enf = Enforcer(profile, "auto", proc=proc)
    enf.prepare("t3")
    by = {r.limit: r for r in enf.results}
    assert by["memory"].enforced and "RLIMIT_AS" in by["memory"].mechanism and enf.as_cap_mb == 1024
    assert "sched_setaffinity" in by["cores"].mechanism
    strict = Enforcer(profile, "cgroup", proc=proc)
    strict.prepare("t4")
    mem = next(r for r in strict.results if r.limit == "memory")
    assert not mem.enforced and mem.mechanism == "not enforced" and "no usable cgroup" in mem.detail
    off = Enforcer(profile, "none", proc=proc)
    off.prepare("t5")
    assert not any(r.enforced for r in off.results if r.limit in ("memory", "cores"))


def _check_stage_shape(result: dict) -> None:
    assert list(result["stages"]) == list(STAGES)
    for name, stage in result["stages"].items():
        assert STAGE_KEYS <= set(stage), name


def test_one_round_end_to_end_reports_every_stage_and_decodes(shards):
    result = run_client_bench(BenchOptions(profile="desktop", params=3000, he="lean", clients=3, steps=3,
                                           shard_dir=shards))
    _check_stage_shape(result)
    stages = result["stages"]
    assert all(s["ok"] and s["ran"] for s in stages.values()), stages
    assert stages["encrypt"]["bytes_up"] > 4 * 3000 and stages["decrypt_share"]["bytes_down"] > 0
    # malicious threat model: the decrypt stage brings the own c1 and C1 back (about one upload), signs, shares
    assert stages["decrypt_share"]["bytes_up"] > 0
    assert stages["decrypt_share"]["bytes_down"] < 1.5 * stages["encrypt"]["bytes_up"]
    assert stages["train"]["cpu_s"] > 0 and stages["train"]["peak_rss_mb"] > 50
    check = result["server"]["round_check"]
    assert check["max_abs_error"] <= check["expected_max_error"]
    assert result["energy"]["is_a_model"] and result["energy"]["projected_on_device"]["cpu_s"] > 0
    assert result["totals"]["ok"] and result["stopped"] is None
    # the client's and the server's SEAL scratch folders are gone
    assert result["harness"]["scratch_dirs"] == 2 and result["harness"]["scratch_dirs_left"] == []


def test_out_of_memory_under_rlimit_as_is_a_reported_stage_result(shards):
    """A cap that holds the imports but not training: the stage reports out_of_memory, the rest is not reached."""
    result = run_client_bench(BenchOptions(profile="rpi4-class", params=3_000_000, he="lean", clients=3, steps=2,
                                           enforce="fallback", memory_mb=620, stage_timeout_s=120,
                                           shard_dir=shards))
    _check_stage_shape(result)
    stopped = result["stopped"]
    assert stopped is not None and stopped["error"] == "out_of_memory", result["stages"]
    failed = result["stages"][stopped["stage"]]
    assert not failed["ok"] and failed["rss_at_failure_mb"] > 0
    later = STAGES[STAGES.index(stopped["stage"]) + 1:]
    assert all(not result["stages"][s]["ran"] and "not reached" in result["stages"][s]["reason"] for s in later)
    assert result["harness"]["client_exit"] == 75
    assert result["harness"]["scratch_dirs_left"] == []  # the killed client's SEAL scratch folder is removed
    assert any("RLIMIT_AS" in r["mechanism"] for r in result["limits"])


def _cgroup_memory_writable() -> bool:
    base = Path("/sys/fs/cgroup/memory")
    if os.geteuid() != 0 or not base.is_dir():
        return False
    probe = base / f"bastionfl-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _cgroup_memory_writable(), reason="needs a writable cgroup memory controller (root)")
def test_kernel_oom_kill_in_a_cgroup_is_a_reported_stage_result(shards):
    result = run_client_bench(BenchOptions(profile="rpi4-class", params=3_000_000, he="lean", clients=3, steps=2,
                                           enforce="cgroup", memory_mb=600, stage_timeout_s=120,
                                           shard_dir=shards))
    stopped = result["stopped"]
    assert stopped is not None and stopped["error"] == "out_of_memory", result["stages"]
    assert "OOM killer" in stopped["detail"] and stopped["rss_at_failure_mb"] > 0
    assert result["cgroup_memory"]["oom_kills"] + result["cgroup_memory"]["limit_hits"] > 0


def test_cli_usage_errors_and_profile_list(capsys):
    assert cli(["bench", "client", "--he", "huge"]) == 2
    assert "--he must be one of" in capsys.readouterr().err
    assert cli(["bench", "client", "--profile", "pi9"]) == 2
    assert cli(["bench", "client", "--clients", "1"]) == 2
    assert cli(["bench", "client", "--list-profiles"]) == 0
    assert "rpi-zero2-class" in capsys.readouterr().out


def test_cli_json(capsys, tmp_path):
    out = tmp_path / "r.json"
    assert cli(["bench", "client", "--profile", "desktop", "--params", "2000", "--he", "none", "--clients", "3",
                "--steps", "2", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["command"].startswith("bastionfl bench client")
    _check_stage_shape(printed)  # a plaintext round: no key setup, no decryption share, a float32 upload
    st = printed["stages"]
    assert not st["key_setup"]["ran"] and st["key_setup"]["ok"] and not st["decrypt_share"]["ran"]
    assert st["encrypt"]["bytes_up"] == 4 * printed["model"]["params"] and printed["totals"]["ok"]
