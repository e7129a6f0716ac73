"""Image datasets for BastionFL as float tensors in [0, 1], shape (N, C, H, W), labels int64.

Sources: scikit-learn's embedded digits (default, offline), MNIST and Fashion-MNIST from IDX files in a
data directory or through torchvision when online, CIFAR-10 through torchvision. Every failure to find or
parse a dataset raises ``DatasetError`` with one line naming the path and what was expected.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bastionfl.errors import BastionFLError

__all__ = ["ImageData", "DatasetError", "load_image_dataset", "read_idx", "DATASETS"]

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10")
_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


class DatasetError(BastionFLError, ValueError):
    """A dataset is missing or malformed; the message names the path and what was expected."""


@dataclass(frozen=True)
class ImageData:
    """A train/test split of an image classification dataset."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])


def read_idx(path: Path, expect_dims: int) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) holding unsigned bytes with ``expect_dims`` dimensions."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found (expected an IDX file)") from None
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read or decompress ({exc}); expected an IDX file") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != expect_dims:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes with {expect_dims} dimension(s)")
    header = 4 + 4 * expect_dims
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * expect_dims, raw[4:header])
    count = int(np.prod(dims))
    if len(raw) - header != count:
        raise DatasetError(f"{path}: IDX body holds {len(raw) - header} bytes, header promises {count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(data_dir: Path, stem: str) -> Path:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem, data_dir / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    raise DatasetError(f"{data_dir}: missing {stem}[.gz] (expected the four IDX files of MNIST/Fashion-MNIST)")


def _load_idx_dir(name: str, data_dir: Path) -> ImageData:
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: not a directory (expected the IDX files of {name})")
    arrays = {k: read_idx(_find_idx(data_dir, stem), 3 if k.endswith("x") else 1) for k, stem in _IDX_FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DatasetError(f"{data_dir}: {split} images and labels differ in count")
    if int(arrays["train_y"].max()) > 9:
        raise DatasetError(f"{data_dir}: labels above 9 (expected 10 classes)")
    return _to_image_data(name, arrays["train_x"][:, None], arrays["train_y"], arrays["test_x"][:, None], arrays["test_y"], 10)


def _to_image_data(name: str, tx: np.ndarray, ty: np.ndarray, vx: np.ndarray, vy: np.ndarray, classes: int) -> ImageData:
    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32) / 255.0)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    return ImageData(name, images(tx), labels(ty), images(vx), labels(vy), classes)


def _load_digits() -> ImageData:
    """scikit-learn's 1,797 8x8 digits, split 80/20 stratified with a fixed seed (the test set never changes)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    tx, vx, ty, vy = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    return _to_image_data("digits", tx, ty, vx, vy, 10)


def _load_torchvision(name: str, root: Path) -> ImageData:
    """MNIST, Fashion-MNIST or CIFAR-10 through torchvision (downloads into ``root`` when online)."""
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10}[name]
    try:
        train = cls(str(root), train=True, download=True)
        test = cls(str(root), train=False, download=True)
    except Exception as exc:  # network or archive errors arrive as many types; report them in one line
        raise DatasetError(f"{root}: cannot load {name} through torchvision ({type(exc).__name__}: {exc})") from None

    def arrays(ds: object) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(ds.data)  # type: ignore[attr-defined]
        y = np.asarray(ds.targets)  # type: ignore[attr-defined]
        x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
        return x, y

    (tx, ty), (vx, vy) = arrays(train), arrays(test)
    return _to_image_data(name, tx, ty, vx, vy, 10)


def load_image_dataset(name: str, data_dir: str | Path = "") -> ImageData:
    """Load ``name`` from ``data_dir`` (IDX files for MNIST/Fashion-MNIST) or, without one, the standard loader."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "digits":
        return _load_digits()
    if name in ("mnist", "fashion-mnist") and data_dir:
        path = Path(data_dir).expanduser()
        # a torchvision root (with <Class>/raw/) is accepted too
        raw = path / ("FashionMNIST" if name == "fashion-mnist" else "MNIST") / "raw"
        return _load_idx_dir(name, raw if raw.is_dir() and not (path / f"{_IDX_FILES['train_x']}.gz").exists() else path)
    root = Path(data_dir).expanduser() if data_dir else Path.home() / ".cache" / "bastionfl" / "data"
    return _load_torchvision(name, root)
