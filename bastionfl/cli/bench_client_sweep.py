"""``bastionfl bench client-sweep`` and ``bastionfl bench server``: parse, run, write the files, print."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["client_sweep", "server_growth"]


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what}: give at least one positive number")
    return values


def client_sweep(argv: list[str]) -> int:
    """Model size x HE profile x federation size; results JSON, PNG plots, markdown table."""
    p = argparse.ArgumentParser(prog="bastionfl bench client-sweep",
                                description="bench client over model size x HE profile x federation size, with "
                                            "plots and a markdown table; points above --budget-mb are predicted")
    p.add_argument("--sizes", default="10000,100000,1000000,10000000")
    p.add_argument("--he", default="none,lean,precise")
    p.add_argument("--clients", default="3,30,100")
    p.add_argument("--profile", default="rpi4-class", help="CPU limits of this profile (default rpi4-class)")
    p.add_argument("--memory-mb", type=int, default=0,
                   help="memory cap during the sweep (default 0: none, so the plots show the real peaks)")
    p.add_argument("--budget-mb", type=float, default=4096, help="skip points predicted to need more")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=os.environ.get("BASTIONFL_DATA_DIR", ""))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out-dir", type=Path, default=Path("docs"), help="where the PNG goes (default docs/)")
    p.add_argument("--results", type=Path, default=Path("bench-client-sweep.json"))
    p.add_argument("--resume", action="store_true", help="keep the points already in --results")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from bastionfl.simulations.bench_client import BenchClientError, BenchOptions
    from bastionfl.simulations.bench_client.sweep import SweepSpec, render_sweep, run_sweep

    try:
        sizes, clients = _ints(args.sizes, "--sizes"), _ints(args.clients, "--clients")
        he = [h.strip() for h in args.he.split(",") if h.strip()]
        base = BenchOptions(profile=args.profile, memory_mb=args.memory_mb, dataset=args.dataset,
                            data_dir=args.data_dir or "", steps=args.steps, shard_dir=args.results.parent)
        for h in he:
            BenchOptions(**{**base.__dict__, "he": h}).check()
        spec = SweepSpec(sizes, he, clients, base, args.budget_mb)
    except (ValueError, BenchClientError) as exc:
        print(f"bastionfl bench client-sweep: {exc}", file=sys.stderr)
        return 2
    try:
        data = run_sweep(spec, args.results, resume=args.resume, progress=lambda s: print(s, file=sys.stderr))
    except BenchClientError as exc:
        print(f"bastionfl bench client-sweep: {exc}", file=sys.stderr)
        return 2
    sp = data["spec"]
    command = (f"bastionfl bench client-sweep --sizes {','.join(map(str, sp['sizes']))} --he {','.join(sp['he'])} "
               f"--clients {','.join(map(str, sp['clients']))} --profile {sp['profile']} --memory-mb "
               f"{sp['memory_mb']} --dataset {sp['dataset']} --steps {sp['steps']} --budget-mb {sp['budget_mb']:g}")
    print(render_sweep(data, args.out_dir, command))
    print(f"plot: {args.out_dir / 'bench-client-sweep.png'}; results: {args.results}", file=sys.stderr)
    return 0


def _growth_table(result: dict[str, Any]) -> str:
    from bastionfl.simulations.bench_client.growth import STAGES

    lines = ["| n | key setup CPU s | aggregation CPU s (ms per client) | proposals CPU s (ms per client) | "
             "confirmation CPU s | fusion CPU s (ms per client) | peak RSS MB: keys / aggregation / proposals / "
             "confirmation / fusion |", "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        n = row["clients"]
        if "skipped" in row or "error" in row:
            lines.append(f"| {n} | not run: {row.get('skipped') or row.get('error')} | | | | | |")
            continue
        st = row["stages"]
        peaks = " / ".join(f"{st[s]['peak_rss_mb']:,.0f}" for s in STAGES)
        lines.append(f"| {n} | {st['key_setup']['cpu_s']:.2f} | "
                     f"{st['aggregation']['cpu_s']:.2f} ({1e3 * st['aggregation']['cpu_s'] / n:.0f}) | "
                     f"{st['proposals']['cpu_s']:.2f} ({1e3 * st['proposals']['cpu_s'] / n:.0f}) | "
                     f"{st['confirmation']['cpu_s']:.2f} | "
                     f"{st['fusion']['cpu_s']:.2f} ({1e3 * st['fusion']['cpu_s'] / n:.1f}) | {peaks} |")
    return "\n".join(lines) + "\n"


def server_growth(argv: list[str]) -> int:
    """The server's side of one secure round (malicious threat model) for growing federations."""
    p = argparse.ArgumentParser(prog="bastionfl bench server",
                                description="server-side cost of one secure round (key setup, aggregation, proposals, "
                                            "confirmation, fusion, peak RSS) against the number of clients")
    p.add_argument("--clients", default="10,100,1000")
    p.add_argument("--params", type=int, default=1_000_000)
    p.add_argument("--he", default="lean", choices=("lean", "precise"))
    p.add_argument("--budget-mb", type=float, default=6144, help="skip runs predicted to need more server memory")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=Path)
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        clients = _ints(args.clients, "--clients")
        if args.params < 2:
            raise ValueError("--params: at least 2")
        if min(clients) < 2:
            raise ValueError("--clients: at least 2")
    except ValueError as exc:
        print(f"bastionfl bench server: {exc}", file=sys.stderr)
        return 2
    from bastionfl.simulations.bench_client.growth import run_server_growth

    result = run_server_growth(clients, args.params, args.he, args.budget_mb,
                               progress=lambda s: print(s, file=sys.stderr))
    result["command"] = "bastionfl bench server " + " ".join(argv)
    result["table"] = _growth_table(result)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else result["table"])
    return 0
