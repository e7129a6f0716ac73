"""The benchmark's memory watch: this process's peak RSS restarts per run and sees an allocation inside the block;
a child process's memory counts among the descendants, not the process's own."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from bastionfl.simulations.proc_memory import MemoryWatch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_own_peak_covers_an_allocation_inside_the_block():
    with MemoryWatch() as watch:
        block = np.ones(200 * 2**20 // 8)  # 200 MB, touched
        del block
    fig = watch.figures()
    assert fig["server_process_peak_rss_mb"] >= 190
    if fig["server_process_peak_since"] == "this run":  # the kernel let the high-water mark restart
        with MemoryWatch() as again:
            pass
        assert again.figures()["server_process_peak_rss_mb"] < fig["server_process_peak_rss_mb"] - 150


def test_a_child_process_counts_among_the_descendants():
    code = "import numpy as np, time; a = np.ones(150 * 2**20 // 8); time.sleep(3)"
    with MemoryWatch(interval_s=0.1) as watch:
        child = subprocess.Popen([sys.executable, "-c", code])
        child.wait(timeout=60)
        time.sleep(0.2)
    assert watch.figures()["descendants_peak_rss_mb"] >= 140


def test_the_load_average_is_sampled_over_the_block():
    with MemoryWatch(interval_s=0.05) as watch:
        time.sleep(0.3)
    low, high = watch.load_range()
    assert len(watch.load_1m) >= 3 and 0 <= low <= high
