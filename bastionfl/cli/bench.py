"""``bastionfl bench rounds|auth``: parse options, run the benchmark, print its JSON (``bench he``: see its module)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bastionfl.config import ConfigError, RunConfig, apply_overrides, parse_set

__all__ = ["rounds", "auth"]


def _emit(result: dict, out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.write_text(text + "\n")


def rounds(argv: list[str]) -> int:
    """Per-round time and bytes of one federation in several secure-aggregation modes; exit 2 on bad options."""
    p = argparse.ArgumentParser(prog="bastionfl bench rounds",
                                description="Per-round time and bytes of the same seeded federation in several modes, "
                                            "the first mode being the baseline of the ratios.")
    p.add_argument("--modes", default="none,xmkckks",
                   help="comma-separated modes: none | xmkckks | xmkckks/<threat model>; the first is the baseline")
    p.add_argument("--deployment", action="store_true",
                   help="run each mode as a SuperLink and SuperNodes on 127.0.0.1 (flwr run) instead of simulating")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    try:
        base = apply_overrides(RunConfig(), parse_set(args.sets))
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if not modes:
            raise ConfigError("--modes: give at least one mode")
        from bastionfl.simulations.bench_rounds import mode_overrides

        for m in modes:
            apply_overrides(base, mode_overrides(m))
    except ConfigError as exc:
        print(f"bastionfl bench rounds: {exc}", file=sys.stderr)
        return 2
    from bastionfl.simulations.bench_rounds import run_rounds_bench

    _emit(run_rounds_bench(base, modes, progress=lambda line: print(line, file=sys.stderr),
                           deployment=args.deployment), args.out)
    return 0


def auth(argv: list[str]) -> int:
    """Handshake CPU time and Home Authority throughput; exit 2 on bad options."""
    p = argparse.ArgumentParser(prog="bastionfl bench auth",
                                description="Client CPU per handshake and Home Authority throughput, in-process and "
                                            "over HTTPS.")
    p.add_argument("--n", type=int, default=2000, help="in-process handshakes")
    p.add_argument("--http-n", type=int, default=400, help="handshakes over HTTPS (0 to skip)")
    p.add_argument("--http-concurrency", type=int, default=4, help="concurrent FL-server connections")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.n < 1 or args.http_n < 0 or not 1 <= args.http_concurrency <= 16:
        print("bastionfl bench auth: need --n >= 1, --http-n >= 0, 1 <= --http-concurrency <= 16", file=sys.stderr)
        return 2
    from bastionfl.simulations.bench_auth import run_auth_bench

    _emit(run_auth_bench(args.n, args.http_n, args.http_concurrency), args.out)
    return 0
