"""The ``bastionfl`` command line: one entry point, subcommands dispatched to their functions in ``bastionfl.cli``.

Each command is ``function(argv: list[str]) -> int`` in a module of this package, imported lazily, so
``bastionfl --help`` stays fast and one command's heavy imports never slow another's. The modules only parse,
call the library (``bastionfl.simulations``, ``bastionfl.deploy``) and print.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main", "COMMANDS"]

# command words -> ("module:function", one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("simulate",): ("simulate:main", "run a simulated federation (Flower Simulation Engine)"),
    ("bench", "he"): ("bench_he:main", "benchmark xMK-CKKS against baselines (JSON)"),
    ("bench", "rounds"): ("bench:rounds", "per-round time and bytes: plaintext vs HE (JSON)"),
    ("bench", "auth"): ("bench:auth", "benchmark pseudonym authentication (JSON)"),
    ("bench", "client"): ("bench_client:client", "one client round under a device profile's enforced limits"),
    ("bench", "client-sweep"): ("bench_client:client_sweep",
                                "client cost over model size x HE profile x federation size, with plots"),
    ("bench", "server"): ("bench_client:server", "server aggregation and fusion time and memory against clients"),
    ("ha", "serve"): ("ha:serve", "run the Home Authority service"),
    ("ha", "enroll"): ("ha:enroll", "enrol a client and write its credential file"),
    ("ha", "revoke"): ("ha:revoke", "revoke a client's enrolment"),
    ("deploy", "certs"): ("deploy:certs", "write a test CA and a TLS server certificate"),
    ("deploy", "prepare"): ("deploy:prepare", "one CA, TLS certificates, HA database, per-node credentials, HA token"),
    ("deploy", "local"): ("deploy:local", "CA, Home Authority, SuperLink and N SuperNodes as local processes; runs "
                                          "an admitted xMK-CKKS federation"),
    ("experiment", "image"): ("experiment:image", "image backdoor defense grid"),
    ("experiment", "text"): ("experiment:text", "text backdoor defense grid"),
    ("experiment", "text-tune"): ("experiment:text_tune", "BTU clean tune on finished text runs, paired over seeds"),
    ("experiment", "text-ceiling"): ("experiment:text_ceiling",
                                     "central text fine-tune without attack: CA, floor, clean ASR"),
    ("sanity", "btu"): ("sanity:btu", "centralised BTU run without and with the defense (no federation)"),
    ("sanity", "defenses"): ("sanity:defenses", "centralised image defenses on Fashion-MNIST (no federation)"),
}


def _usage() -> str:
    lines = ["usage: bastionfl <command> [options]", "", "commands:"]
    width = max(len(" ".join(words)) for words in COMMANDS)
    for words, (_, help_text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<{width}}  {help_text}")
    lines.append("")
    lines.append("Run 'bastionfl <command> --help' for the options of one command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; exit code 2 for an unknown command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    for words, (target, _) in sorted(COMMANDS.items(), key=lambda kv: -len(kv[0])):
        if tuple(args[: len(words)]) == words:
            module_name, function = target.split(":")
            if module_name == "bench_he":  # the benchmark module parses its own options
                module = importlib.import_module("bastionfl.simulations.bench_he")
            else:
                module = importlib.import_module(f"bastionfl.cli.{module_name}")
            return int(getattr(module, function)(args[len(words):]) or 0)
    print(f"bastionfl: unknown command {' '.join(args[:2])!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
