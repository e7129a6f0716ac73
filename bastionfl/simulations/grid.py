"""What the experiment grids share: their error type, the live progress display, and how a results page is written.

A grid runs one simulated federation per row; the display shows a bar over all rounds of the grid, a bar for the
current row and a line per finished round. A results page keeps whatever stands below ``KEEP_MARKER`` (the
hand-written discussion) when the experiment rewrites it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ExperimentError", "GridDisplay", "KEEP_MARKER", "fmt_minutes", "pct", "write_results", "publish_results"]

KEEP_MARKER = "<!-- text below this line is kept when the experiment rewrites this file -->"


class ExperimentError(RuntimeError):
    """The grid cannot run as asked (a bad selection, missing data, a failed row)."""


def fmt_minutes(seconds: float) -> str:
    """``5.5 min`` from a minute on, ``42 s`` below."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def pct(x: float | None) -> str:
    """A share as a percentage with two decimals; ``-`` when not measured."""
    return "-" if x is None else f"{100 * x:.2f}"


def write_results(path: Path, text: str) -> None:
    """Write a results page, keeping the text below ``KEEP_MARKER`` of the page it replaces."""
    kept = ""
    if path.exists():
        old = path.read_text()
        if KEEP_MARKER in old:
            kept = old.split(KEEP_MARKER, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n\n" + KEEP_MARKER + (kept if kept else "\n"))


def publish_results(console: Any, path: Path, text: str, total_s: float | None = None) -> None:
    """Write the page (``write_results``), echo its table rows and say where it went."""
    write_results(path, text)
    console.print("\n".join(line for line in text.splitlines() if line.startswith("|")), highlight=False)
    console.print(f"results written to {path}" + (f" (total {fmt_minutes(total_s)})" if total_s is not None else ""))


class GridDisplay:
    """A rich progress display, also a ``RunObserver`` for the row that runs (``on_start``/``on_round``).

    ``round_extra(entry)`` adds row-specific figures to each round's line (ASR, repair time, ...).
    """

    def __init__(self, console: Any, total_rounds: int, *, label_width: int = 22,
                 round_extra: Callable[[dict[str, Any]], str] | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.width = label_width
        self.round_extra = round_extra or (lambda entry: "")
        self.progress = Progress(TextColumn(f"[bold]{{task.fields[label]:<{label_width}}}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                                 console=console)
        self.grid_task = self.progress.add_task("", total=total_rounds, label="grid (rounds)")
        self.arm_task: Any = None
        self.label = ""

    def start(self) -> None:
        self.progress.start()

    def begin_arm(self, label: str, total_rounds: int, first_round: int = 1) -> None:
        """A new row starts (``first_round`` > 1 when it resumes from a checkpoint)."""
        if self.arm_task is not None:
            self.progress.remove_task(self.arm_task)
        self.label = label
        self.arm_task = self.progress.add_task("starting the simulation engine", total=total_rounds,
                                               completed=first_round - 1, label=label)

    def on_start(self, first_round: int, total_rounds: int) -> None:
        if self.arm_task is not None:
            self.progress.update(self.arm_task, completed=first_round - 1, total=total_rounds,
                                 description="training")

    def on_round(self, entry: dict[str, Any]) -> None:
        self.console.print(f"{self.label:<{self.width}} round {entry['round']:>2}  CA {100 * entry['accuracy']:6.2f}%"
                           f"{self.round_extra(entry)}  {entry['time_s']:.0f} s", highlight=False)
        self.progress.update(self.arm_task, advance=1, description=f"CA {100 * entry['accuracy']:.1f}%")
        self.progress.update(self.grid_task, advance=1)

    def end_arm(self, summary: str) -> None:
        """Print the finished row's one-line summary."""
        self.console.print(f"[bold]{self.label}[/bold]: {summary}")

    def close(self) -> None:
        self.progress.stop()
