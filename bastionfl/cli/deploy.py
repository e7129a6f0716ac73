"""``bastionfl deploy certs|prepare|local``: deployment helpers on the command line (parse, call, print)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["certs", "local", "prepare", "prepare_parser"]


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


def local(argv: list[str]) -> int:
    """Stand up CA, HA, SuperLink and N SuperNodes on this machine, run an admitted xMK-CKKS federation, stop all."""
    p = argparse.ArgumentParser(
        prog="bastionfl deploy local",
        description="Run the whole deployment as local processes: one CA, the Home Authority with TLS, N enrolled "
                    "SuperNodes with their own credentials, a TLS SuperLink, and a federation with pseudonymous "
                    "admission and xMK-CKKS through flwr run. Exits 0 only if the federation completed.")
    p.add_argument("--nodes", type=int, default=3, help="number of SuperNodes (default 3)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="Flower run-config override, dashes (e.g. num-server-rounds=3, client-defense=abl); "
                        "repeatable")
    p.add_argument("--workdir", type=Path, default=Path("bastionfl-deploy"),
                   help="where certificates, HA data, credentials, logs and results go (must not hold an earlier "
                        "deployment)")
    p.add_argument("--app", type=Path, default=None, help="the Flower app folder (default: this project)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds the federation may take")
    p.add_argument("--keep-running", action="store_true", help="after the run, keep everything up until Ctrl-C")
    p.add_argument("--outsiders", type=int, default=0,
                   help="also start this many SuperNodes without a credential (admission shuts them out)")
    p.add_argument("--supernode-auth", action="store_true",
                   help="also turn on Flower's SuperNode authentication (static node keys: the SuperLink's operator "
                        "can then link a node across rounds and runs; see docs/deploy.md)")
    args = p.parse_args(argv)
    from bastionfl.deploy.local import DeployError, LocalDeployment, parse_settings, stop_on_sigterm

    stop_on_sigterm()
    try:
        deployment = LocalDeployment(args.workdir, args.nodes, parse_settings(args.set), args.app,
                                     outsiders=args.outsiders, supernode_auth=args.supernode_auth)
        deployment.run(timeout_s=args.timeout, keep_running=args.keep_running)
    except DeployError as exc:
        print(f"bastionfl deploy local: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    except KeyboardInterrupt:
        print("bastionfl deploy local: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    print("bastionfl deploy local: the federation completed; every process it started was stopped")
    return 0


def prepare_parser() -> argparse.ArgumentParser:
    """The options of ``bastionfl deploy prepare`` (the compose file's setup service uses them too)."""
    p = argparse.ArgumentParser(prog="bastionfl deploy prepare",
                                description="Prepare a deployment folder: one CA, SuperLink and HA certificates, "
                                            "the HA database with N enrolled nodes, one credential per node, the "
                                            "FL server's HA token.")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--superlink-name", action="append", default=[], help="DNS name of the SuperLink (repeatable)")
    p.add_argument("--ha-name", action="append", default=[], help="DNS name of the HA (repeatable)")
    p.add_argument("--ip", action="append", default=[], help="IP address both certificates cover (repeatable)")
    p.add_argument("--owner", default="", metavar="UID:GID", help="chown everything written (containers: 49999:49999)")
    p.add_argument("--if-absent", action="store_true", help="exit 0 without changes when --out is prepared already")
    return p


def prepare(argv: list[str]) -> int:
    """Write a deployment's CA, TLS certificates, HA database, per-node credentials and the HA token into a folder."""
    args = prepare_parser().parse_args(argv)
    from bastionfl.deploy.prepare import PrepareError, prepare_deployment

    owner = None
    if args.owner:
        uid, sep, gid = args.owner.partition(":")
        if not (uid.isdigit() and sep and gid.isdigit()):
            print("bastionfl deploy prepare: --owner expects UID:GID", file=sys.stderr)
            return 2
        owner = (int(uid), int(gid))
    if args.if_absent and (args.out / "ha" / "ha.sqlite").exists():
        print(f"bastionfl deploy prepare: {args.out} is prepared already")
        return 0
    try:
        prepare_deployment(args.out, args.nodes, superlink_names=(args.superlink_name or ["localhost"], args.ip),
                           ha_names=(args.ha_name or ["localhost"], args.ip), owner=owner)
    except PrepareError as exc:
        print(f"bastionfl deploy prepare: {exc}", file=sys.stderr)
        return 2
    print(f"bastionfl deploy prepare: wrote {args.out} for {args.nodes} node(s)")
    return 0
