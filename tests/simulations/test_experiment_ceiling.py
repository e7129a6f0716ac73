"""``experiment text-ceiling``: the federation's starting model, trained centrally, measured as the grid measures."""

from __future__ import annotations

from bastionfl.cli import experiment as experiment_cli

import argparse
from pathlib import Path

import pytest

from bastionfl.simulations import experiment_ceiling as ceiling
from bastionfl.cli.main import main as cli_main
from bastionfl.simulations.grid import ExperimentError
from tests.conftest import shared_data_dir

DATA = shared_data_dir()
needs_data = pytest.mark.skipif(DATA is None or not (DATA / "sst2").is_dir(),
                                reason="needs the shared data folder with sst2/ (../shared/data or BASTIONFL_DATA_DIR)")


def _args(**kw: object) -> argparse.Namespace:
    base = experiment_cli._text_ceiling_parser().parse_args(["--data-dir", str(DATA or "."), "--model", "tiny-bert", "--layers", "1",
                                         "--train-subset", "96", "--epochs", "2", "--evals-per-epoch", "2",
                                         "--lr", "1e-3", "--batch-size", "32", "--max-len", "24"])
    for k, v in kw.items():
        setattr(base, k, v)
    return base


@needs_data
def test_points_start_at_the_servers_model_and_follow_the_schedule() -> None:
    from bastionfl.tasks.registry import build_task

    cfg = ceiling.ceiling_config(_args())
    ticks: list[tuple[int, int]] = []
    points, n = ceiling.train_ceiling(cfg, epochs=2, evals_per_epoch=2, decay=True,
                                      progress=lambda s, t: ticks.append((s, t)))
    assert n == 96
    assert ticks == [(s, 6) for s in range(1, 7)]  # 96 sentences, batch 32: 3 steps per epoch, 2 epochs
    assert [p.step for p in points] == [0, 2, 3, 5, 6]  # before training, then twice per epoch
    assert [p.epoch for p in points] == pytest.approx([0, 2 / 3, 1, 5 / 3, 2])
    assert [p.lr for p in points] == pytest.approx([1e-3, 1e-3 * 4 / 6, 1e-3 * 3 / 6, 1e-3 / 6, 0.0])
    task = build_task(cfg)
    start = task.evaluate(task.new_model())  # the federation's round-0 global model
    assert (points[0].accuracy, points[0].asr, points[0].asr_floor) == (start["accuracy"], start["asr"],
                                                                       start["asr_floor"])
    again, _ = ceiling.train_ceiling(cfg, epochs=2, evals_per_epoch=2, decay=True)
    assert again == points  # seeded end to end
    constant, _ = ceiling.train_ceiling(cfg, epochs=2, evals_per_epoch=2, decay=False)
    assert [p.lr for p in constant] == [1e-3] * 5


@needs_data
def test_cli_writes_the_page_and_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ceiling.md"
    argv = ["experiment", "text-ceiling", "--data-dir", str(DATA), "--model", "tiny-bert", "--layers", "1",
            "--train-subset", "64", "--epochs", "1", "--evals-per-epoch", "1", "--lr", "1e-3", "--batch-size", "32",
            "--max-len", "24", "--decay", "--plot", "--results", str(out)]
    assert cli_main(argv) == 0
    page = out.read_text()
    assert "bastionfl experiment text-ceiling --data-dir" in page and "--decay" in page
    assert page.count("\n| 0 | 0.00 |") == 1 and "\n| 2 | 1.00 | 0.00e+00 |" in page
    assert "Final: CA" in page and "![CA, ASR and floor over training](ceiling.png)" in page
    assert (tmp_path / "ceiling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flags, match", [
    (["--lr", "0"], "--lr 0.0"),
    (["--lr", "0.5"], "--lr 0.5"),
    (["--epochs", "0"], "--epochs"),
    (["--evals-per-epoch", "0"], "--evals-per-epoch"),
    (["--train-subset", "-1"], "--train-subset"),
])
def test_bad_arguments_are_one_line(flags: list[str], match: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["experiment", "text-ceiling", "--data-dir", str(tmp_path), "--results",
                     str(tmp_path / "r.md"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and match in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "r.md").exists()


def test_missing_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["experiment", "text-ceiling", "--data-dir", str(tmp_path / "nowhere"), "--model", "tiny-bert",
                     "--results", str(tmp_path / "r.md")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("bastionfl experiment text-ceiling:") and "\n" not in err


def test_config_errors_surface_as_experiment_errors() -> None:
    with pytest.raises(ExperimentError, match="max_len|max-len"):
        ceiling.ceiling_config(_args(max_len=0))
