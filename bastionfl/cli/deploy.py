"""``bastionfl deploy certs``: deployment helpers on the command line (parse, call, print)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["certs"]


def certs(argv: list[str]) -> int:
    """Write a test CA and a server certificate (ca.crt, server.pem, server.key) for TLS on the SuperLink or HA."""
    p = argparse.ArgumentParser(prog="bastionfl deploy certs",
                                description="Generate a test CA and a TLS server certificate (tests, demos, compose).")
    p.add_argument("--out", type=Path, required=True, help="folder to write ca.crt, server.pem, server.key into")
    p.add_argument("--san", action="append", default=[], help="DNS name the server certificate covers")
    p.add_argument("--ip", action="append", default=[], help="IP address the server certificate covers")
    p.add_argument("--days", type=int, default=30)
    args = p.parse_args(argv)
    if not args.san and not args.ip:
        print("bastionfl deploy certs: give at least one --san or --ip", file=sys.stderr)
        return 2
    from bastionfl.deploy.certs import make_certificates

    for path in make_certificates(args.out, args.san, args.ip, args.days).values():
        print(path)
    return 0
