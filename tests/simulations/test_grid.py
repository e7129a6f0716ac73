"""The experiment grids' shared parts: results pages keep their discussion, the display reports every round."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from bastionfl.simulations.grid import KEEP_MARKER, GridDisplay, fmt_minutes, pct, write_results


def test_rewrite_keeps_the_text_below_the_marker(tmp_path: Path) -> None:
    path = tmp_path / "r.md"
    write_results(path, "# first\n")
    assert path.read_text().count(KEEP_MARKER) == 1
    path.write_text(path.read_text() + "\nhand-written discussion\n")
    write_results(path, "# second")
    write_results(path, "# third")
    text = path.read_text()
    assert text.startswith("# third") and "# first" not in text and "# second" not in text
    assert text.count(KEEP_MARKER) == 1 and text.endswith("hand-written discussion\n")


def test_formats() -> None:
    assert fmt_minutes(42.4) == "42 s" and fmt_minutes(330) == "5.5 min"
    assert pct(None) == "-" and pct(0.8555) == "85.55"


def test_display_prints_a_line_per_round_and_the_summary() -> None:
    console = Console(record=True, width=120, force_terminal=False)
    display = GridDisplay(console, 2, label_width=12, round_extra=lambda e: f"  ASR {100 * e['asr']:.1f}%")
    display.start()
    display.begin_arm("badnets/btu", 2)
    display.on_start(1, 2)
    display.on_round({"round": 1, "accuracy": 0.8, "asr": 0.31, "time_s": 170.0})
    display.on_round({"round": 2, "accuracy": 0.85, "asr": 0.12, "time_s": 95.0})
    display.end_arm("CA 85.00%")
    display.close()
    out = console.export_text()
    assert "badnets/btu  round  1  CA  80.00%  ASR 31.0%  170 s" in out
    assert "round  2  CA  85.00%  ASR 12.0%  95 s" in out and "badnets/btu: CA 85.00%" in out
    assert display.progress.tasks[0].completed == 2
