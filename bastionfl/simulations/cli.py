"""The ``bastionfl`` command line: one entry point, subcommands dispatched to their own modules.

Each subcommand module exposes ``main(argv: list[str]) -> int`` and is imported lazily, so
``bastionfl --help`` stays fast and one room's heavy imports never slow another's command.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main"]

# command words -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("simulate",): ("bastionfl.simulations.simulate", "run a simulated federation (Flower Simulation Engine)"),
    ("bench", "he"): ("bastionfl.simulations.bench_he", "benchmark xMK-CKKS against baselines (JSON)"),
    ("bench", "rounds"): ("bastionfl.simulations.bench_rounds", "per-round time and bytes: plaintext vs HE (JSON)"),
    ("bench", "auth"): ("bastionfl.simulations.bench_auth", "benchmark pseudonym authentication (JSON)"),
    ("ha", "serve"): ("bastionfl.simulations.ha_cli", "run the Home Authority service"),
    ("ha", "enroll"): ("bastionfl.simulations.ha_cli", "enrol a client and write its credential file"),
    ("ha", "revoke"): ("bastionfl.simulations.ha_cli", "revoke a client's enrolment"),
    ("experiment", "image"): ("bastionfl.simulations.experiment_image", "image backdoor defense grid"),
    ("experiment", "text"): ("bastionfl.simulations.experiment_text", "text backdoor defense grid"),
    ("experiment", "text-tune"): ("bastionfl.simulations.experiment_tune",
                                  "BTU clean tune on finished text runs, paired over seeds"),
    ("experiment", "text-ceiling"): ("bastionfl.simulations.experiment_ceiling",
                                     "central text fine-tune without attack: CA, floor, clean ASR"),
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
    """Dispatch to a subcommand module; exit code 2 for an unknown command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    for words, (module_name, _) in sorted(COMMANDS.items(), key=lambda kv: -len(kv[0])):
        if tuple(args[: len(words)]) == words:
            module = importlib.import_module(module_name)
            rest = args[len(words):]
            # ha_cli serves several words: it receives the verb as its first argument
            if module_name.endswith("ha_cli"):
                rest = [words[-1], *rest]
            return int(module.main(rest) or 0)
    print(f"bastionfl: unknown command {' '.join(args[:2])!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
