"""``bastionfl ha serve|enroll|revoke``: run the Home Authority service and administer its enrolments.

The dispatcher passes ``argv = [verb, *options]``; exit code 0 on success, 1 on an operational failure, 2 on a
usage error, always with a one-line message and never a traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from bastionfl.deploy.ha_guard import SHUTDOWN_TIMEOUT_S

__all__ = ["main"]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise _UsageError(f"{self.prog}: {message}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, help="SQLite database of the Home Authority")
    p.add_argument("--kek-file", required=True,
                   help="0600 file with the 32-byte key-encryption key (hex); created with a new database")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    serve = _Parser(prog="bastionfl ha serve", description="Run the Home Authority HTTPS service.")
    _common(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--cert", required=True, help="TLS certificate (PEM)")
    serve.add_argument("--key", required=True, help="TLS private key (PEM)")
    serve.add_argument("--server", action="append", default=[], metavar="ID=TOKEN_FILE",
                       help="admit FL server ID authenticated by the bearer token in TOKEN_FILE "
                            "(created 0600 with a fresh token if absent); repeatable")
    serve.add_argument("--shutdown-timeout", type=float, default=SHUTDOWN_TIMEOUT_S,
                       help="seconds SIGTERM waits for open requests before closing them")
    serve.add_argument("--server-rate", type=float, default=5000.0, help="challenges/s allowed per FL server")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                       help="uvicorn log level; 'info' includes one access-log line per request (no secrets)")

    enroll = _Parser(prog="bastionfl ha enroll", description="Enrol a client and write its credential file.")
    _common(enroll)
    enroll.add_argument("--label", required=True, help="the client's real-world identity (HA registry only)")
    enroll.add_argument("--server", action="append", default=[], metavar="ID",
                        help="FL server id the client may authenticate to; repeatable")
    enroll.add_argument("--out", required=True, help="credential file to write (mode 0600)")
    enroll.add_argument("--force", action="store_true", help="overwrite an existing credential file")

    revoke = _Parser(prog="bastionfl ha revoke", description="Revoke a client; effective at the next round.")
    _common(revoke)
    revoke.add_argument("--label", required=True)
    return {"serve": serve, "enroll": enroll, "revoke": revoke}


def _open_ha(args: argparse.Namespace, **kwargs):
    from bastionfl.auth import HomeAuthority, load_or_create_kek

    new_db = not Path(args.db).exists()
    if not new_db and not Path(args.kek_file).exists():
        raise _UsageError("the key-encryption key file does not exist (it is created only with a new database)")
    if new_db and not Path(args.db).resolve().parent.is_dir():
        raise _UsageError("the database directory does not exist")
    kek = load_or_create_kek(args.kek_file, create=new_db)
    return HomeAuthority.open(args.db, kek, **kwargs)


def _server_tokens(specs: list[str]) -> dict[str, str]:
    from bastionfl.deploy.ha_service import hash_token

    tokens: dict[str, str] = {}
    for spec in specs:
        server_id, sep, path = spec.partition("=")
        if not sep or not server_id or not path:
            raise _UsageError(f"--server expects ID=TOKEN_FILE, got {spec!r}")
        p = Path(path)
        if not p.exists():
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            print(f"bastionfl ha serve: wrote a new token for {server_id!r} to {path}")
        if p.stat().st_mode & 0o077:
            raise _UsageError(f"token file {path} must not be readable by others (chmod 600)")
        token = p.read_text().strip()
        if len(token) < 32:
            raise _UsageError(f"token in {path} is too short (need at least 32 characters)")
        tokens[hash_token(token)] = server_id
    if not tokens:
        raise _UsageError("at least one --server ID=TOKEN_FILE is required")
    return tokens


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bastionfl.auth import RateLimits
    from bastionfl.deploy.ha_service import create_app

    for f in (args.cert, args.key):
        if not Path(f).is_file():
            raise _UsageError(f"TLS file not found: {f}")
    if not 0 <= args.port <= 65535:
        raise _UsageError("--port must be in 0..65535")
    tokens = _server_tokens(args.server)
    ha = _open_ha(args, limits=RateLimits(server_rate=args.server_rate, server_burst=2 * args.server_rate))
    print(f"bastionfl ha serve: Home Authority on https://{args.host}:{args.port} for "
          f"{len(tokens)} server(s)")
    uvicorn.run(create_app(ha, tokens), host=args.host, port=args.port, ssl_certfile=args.cert,
                ssl_keyfile=args.key, log_level=args.log_level, ws="none", lifespan="off",
                timeout_graceful_shutdown=args.shutdown_timeout, timeout_keep_alive=5)
    return 0


def _enroll(args: argparse.Namespace) -> int:
    from bastionfl.auth import FileCredentialStore

    if not args.server:
        raise _UsageError("at least one --server ID is required")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise _UsageError(f"{args.out} exists (use --force to overwrite)")
    if not out.resolve().parent.is_dir():
        raise _UsageError("the output directory does not exist")
    ha = _open_ha(args)
    try:
        credential = ha.enroll(args.label, list(args.server))
        FileCredentialStore(out).save(credential)
    finally:
        ha.store.close()
    print(f"bastionfl ha enroll: enrolled {args.label!r}; credential written to {args.out} (mode 0600)")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    ha = _open_ha(args)
    try:
        done = ha.revoke(args.label)
    finally:
        ha.store.close()
    if not done:
        print(f"bastionfl ha revoke: no client enrolled as {args.label!r}", file=sys.stderr)
        return 1
    print(f"bastionfl ha revoke: revoked {args.label!r}; effective from the next round")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one ``ha`` verb; returns the exit code."""
    from bastionfl.auth import AuthError

    args_in = list(sys.argv[1:] if argv is None else argv)
    parsers = _parsers()
    if not args_in or args_in[0] not in parsers:
        print("usage: bastionfl ha {serve|enroll|revoke} [options]  (--help for details)", file=sys.stderr)
        return 2
    verb, rest = args_in[0], args_in[1:]
    try:
        args = parsers[verb].parse_args(rest)
        return {"serve": _serve, "enroll": _enroll, "revoke": _revoke}[verb](args)
    except _UsageError as exc:
        text = str(exc)
        print(text if text.startswith("bastionfl ") else f"bastionfl ha {verb}: {text}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except AuthError as exc:
        print(f"bastionfl ha {verb}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"bastionfl ha {verb}: {exc.strerror or 'I/O error'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130



def serve(argv: list[str]) -> int:
    """``bastionfl ha serve``."""
    return main(["serve", *argv])


def enroll(argv: list[str]) -> int:
    """``bastionfl ha enroll``."""
    return main(["enroll", *argv])


def revoke(argv: list[str]) -> int:
    """``bastionfl ha revoke``."""
    return main(["revoke", *argv])


if __name__ == "__main__":
    sys.exit(main())
