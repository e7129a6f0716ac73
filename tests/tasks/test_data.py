"""Dataset loading: embedded digits, IDX parsing and its one-line errors, and the shipped Fashion-MNIST."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from bastionfl.tasks.data import DatasetError, load_image_dataset, read_idx
from tests.conftest import shared_data_dir


def _write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _fake_mnist(folder: Path, n_train: int = 20, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    _write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    _write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), compress=False)
    _write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test), compress=False)


def test_digits_is_embedded_and_scaled() -> None:
    d = load_image_dataset("digits")
    assert d.train_x.shape[1:] == (1, 8, 8) and len(d.train_x) + len(d.test_x) == 1797
    assert float(d.train_x.min()) >= 0.0 and float(d.train_x.max()) == pytest.approx(1.0)
    assert d.num_classes == 10 and d.train_y.dtype.is_floating_point is False


def test_idx_folder_round_trip(tmp_path: Path) -> None:
    _fake_mnist(tmp_path)
    d = load_image_dataset("mnist", tmp_path)
    assert d.train_x.shape == (20, 1, 28, 28) and d.test_x.shape == (10, 1, 28, 28)


def test_truncated_idx_names_the_file(tmp_path: Path) -> None:
    _fake_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetError) as info:
        load_image_dataset("mnist", tmp_path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_wrong_magic_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "x"
    bad.write_bytes(b"\x00\x00\x09\x03" + b"\x00" * 20)
    with pytest.raises(DatasetError, match="not an IDX"):
        read_idx(bad, 3)
    with pytest.raises(DatasetError, match="missing train-images"):
        load_image_dataset("fashion-mnist", tmp_path)
    with pytest.raises(DatasetError, match="not a directory"):
        load_image_dataset("fashion-mnist", tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_image_dataset("imagenet")


def test_mismatched_counts(tmp_path: Path) -> None:
    _fake_mnist(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19))
    with pytest.raises(DatasetError, match="differ in count"):
        load_image_dataset("mnist", tmp_path)


@pytest.mark.skipif(shared_data_dir() is None, reason="the shared Fashion-MNIST copy is not beside this checkout")
def test_shipped_fashion_mnist() -> None:
    d = load_image_dataset("fashion-mnist", shared_data_dir() / "fashion-mnist")  # type: ignore[operator]
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert sorted(set(d.test_y.tolist())) == list(range(10))
