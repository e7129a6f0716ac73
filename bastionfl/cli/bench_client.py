"""``bastionfl bench client | client-sweep | server``: parse options, run the harness, print a table or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["client", "client_sweep", "server"]


def _parse(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help="shard source: digits (built in), fashion-mnist, mnist")
    p.add_argument("--data-dir", default=os.environ.get("BASTIONFL_DATA_DIR", ""),
                   help="folder with the IDX files (default: $BASTIONFL_DATA_DIR)")
    p.add_argument("--steps", type=int, default=20, help="local SGD steps of batch --batch-size (default 20)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--enforce", default="auto", choices=("auto", "cgroup", "fallback", "none"),
                   help="auto: cgroups, else affinity + RLIMIT_AS; fallback: only the latter; none: no limits")
    p.add_argument("--stage-timeout", type=float, default=900.0, help="seconds before a stage counts as hung")
    p.add_argument("--profiles-file", type=Path, default=None, help="an edited copy of the shipped devices.toml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastionfl bench client",
                                description="One real client round in its own process under a device profile's "
                                            "enforced limits, against a server simulated in another process.")
    p.add_argument("--profile", default="rpi4-class", help="device profile (see --list-profiles)")
    p.add_argument("--params", type=int, default=1_000_000, help="model parameters (an MLP sized to this)")
    p.add_argument("--he", default="lean", help="none, lean, precise (or lean-n8192, a candidate small-device profile)")
    p.add_argument("--clients", type=int, default=30, help="federation size the decrypt stage sees")
    p.add_argument("--memory-mb", type=int, default=None, help="override the profile's memory cap (0: none)")
    p.add_argument("--verify", default="auto", choices=("auto", "yes", "no"),
                   help="fuse the round on the server and check the sum (auto: up to 30 clients, 2M parameters)")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--list-profiles", action="store_true", help="print the device profiles and exit")
    _common(p)
    return p


def _mb(x: Any) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _bytes(x: Any) -> str:
    if x is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= size:
            return f"{x / size:.2f} {unit}"
    return f"{x} B"


def _secs(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    o, m = r["options"], r["model"]
    t = Table(title=f"bench client: {r['profile']['name']}, {m['params']:,} parameters, HE {o['he']}, "
                    f"{o['clients']} clients")
    for col in ("stage", "ok", "wall s", "CPU s", "peak MB", "up", "down"):
        t.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    notes = []
    for name, s in r["stages"].items():
        ok = "yes" if s["ok"] and s["ran"] else "n/a" if s["ok"] else "NO"
        if not s["ok"] and (s.get("detail") or s.get("reason")):
            notes.append(f"{name}: {s.get('error', 'not run')}: {s.get('detail') or s.get('reason')}")
        t.add_row(name, ok, _secs(s["wall_s"]) if s["ran"] else "-",
                  _secs(s["cpu_s"]) if s["ran"] else "-", _mb(s.get("peak_rss_mb")) if s["ran"] else "-",
                  _bytes(s["bytes_up"]), _bytes(s["bytes_down"]))
    tot = r["totals"]
    t.add_row("total", "yes" if tot["ok"] else "NO", _secs(tot["wall_s"]), _secs(tot["cpu_s"]),
              _mb(tot["peak_rss_mb"]), _bytes(tot["bytes_up"]), _bytes(tot["bytes_down"]), style="bold")
    console.print(t)
    for line in notes:
        console.print(line)
    lt = Table(title="limits")
    for col in ("limit", "requested", "enforced", "mechanism"):
        lt.add_column(col)
    for lim in r["limits"]:
        lt.add_row(lim["limit"], lim["requested"], "yes" if lim["enforced"] else "NO",
                   lim["mechanism"] + (f" ({lim['detail']})" if lim["detail"] else ""))
    console.print(lt)
    e, dev = r["energy"], r["energy"]["projected_on_device"]
    here = e["this_machine_under_limits"]
    console.print(f"baseline after imports: {_mb(r['baseline'].get('rss_mb'))} MB RSS "
                  f"({_mb(r['baseline'].get('cuda_libs_rss_mb'))} MB of it GPU libraries of this torch build)")
    console.print(f"this machine under limits: CPU {here['cpu_s']:.2f} s, wall {here['wall_s']:.2f} s")
    console.print(f"projected on the device (a MODEL, x{e['arm_cost_factor']:.1f} ARM cost factor): CPU "
                  f"{dev['cpu_s']:.1f} s, {dev['energy_j_above_idle']:.1f} J above idle "
                  f"({dev['energy_j_with_idle']:.1f} J with idle), {dev['average_power_w']:.2f} W while computing "
                  f"(paper: {e['paper_comparison']['paper_average_power_w']} W), peak RSS about "
                  f"{_mb(dev['peak_rss_mb'])} MB")
    check = r["server"].get("round_check")
    if isinstance(check, dict):
        console.print(f"round check: decoded sum within {check['max_abs_error']:.2e} "
                      f"(expected bound {check['expected_max_error']:.2e})")


def _list_profiles(path: Path | None) -> None:
    from bastionfl.simulations.bench_client import load_profiles

    profiles, _ = load_profiles(path)
    for p in profiles.values():
        cap = f"{p.memory_mb} MiB" if p.memory_mb else "no cap"
        print(f"{p.name:<18} cores {p.cores or 'all'}, torch threads {p.torch_threads}, {cap}: {p.description}")


def client(argv: list[str]) -> int:
    """One client round under a device profile; exit 2 on bad options, 1 if the harness itself failed."""
    args = _parse(_parser(), argv)
    if isinstance(args, int):
        return args
    from bastionfl.simulations.bench_client import BenchClientError, BenchOptions, run_client_bench

    try:
        if args.list_profiles:
            _list_profiles(args.profiles_file)
            return 0
        opts = BenchOptions(profile=args.profile, params=args.params, he=args.he, clients=args.clients,
                            dataset=args.dataset, data_dir=args.data_dir or "", steps=args.steps,
                            batch_size=args.batch_size, enforce=args.enforce, verify=args.verify,
                            stage_timeout_s=args.stage_timeout, memory_mb=args.memory_mb,
                            profiles_file=args.profiles_file)
        opts.check()
        from bastionfl.simulations.bench_client.profiles import get_device_profile

        get_device_profile(opts.profile, opts.profiles_file)
    except BenchClientError as exc:
        print(f"bastionfl bench client: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_client_bench(opts, progress=lambda line: print(line, file=sys.stderr))
    except (BenchClientError, RuntimeError, OSError) as exc:
        print(f"bastionfl bench client: {exc}", file=sys.stderr)
        return 1
    result["command"] = "bastionfl bench client " + " ".join(argv)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        _table(result)
    return 0


def client_sweep(argv: list[str]) -> int:
    """Model size x HE profile x federation size, with plots and a markdown table."""
    from bastionfl.cli.bench_client_sweep import client_sweep as run

    return run(argv)


def server(argv: list[str]) -> int:
    """Server-side aggregation and fusion for growing federations."""
    from bastionfl.cli.bench_client_sweep import server_growth as run

    return run(argv)
