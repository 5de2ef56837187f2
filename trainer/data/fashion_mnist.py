"""The `fashion_mnist_lt` dataset: a seeded long-tailed subsample of Fashion-MNIST's idx .gz files.

Class c keeps `int(6000 * IR ** (-c / 9))` training images; pixels in [0, 1], shape (28, 28, 1).
"""

from __future__ import annotations

import gzip
import os
from typing import Optional, Tuple

import numpy as np

from .errors import InputDataError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PER_CLASS = 6000
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def long_tailed_counts(imbalance_ratio: float) -> np.ndarray:
    """Per-class training counts `int(6000 * IR ** (-c / 9))` (int64 [10])."""
    return np.array([int(PER_CLASS * imbalance_ratio ** (-c / 9)) for c in range(10)],
                    dtype=np.int64)


def _read_idx(path: str, magic: int, ndim: int) -> np.ndarray:
    """Reads a gzipped idx file (`magic` and `ndim` checked) as a uint8 array."""
    if not os.path.isfile(path):
        wanted = sorted(sum(FILES.values(), ()))
        raise InputDataError(
            f"data_dir={os.path.dirname(path)!r} has no Fashion-MNIST file "
            f"{os.path.basename(path)!r} (not found: {path!r}; install the Debian package "
            f"dataset-fashion-mnist, or point it at a directory with {wanted})",
            argument="data_dir", value=os.path.dirname(path))
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputDataError(f"file {path!r}: cannot read as gzip: {e}") from e
    header = np.frombuffer(data[:4 + 4 * ndim], dtype=">u4")
    if len(header) != 1 + ndim or int(header[0]) != magic:
        raise InputDataError(f"file {path!r}: not an idx file (magic {header[:1].tolist()}, want {magic})")
    shape = tuple(int(d) for d in header[1:])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise InputDataError(f"file {path!r}: {body.size} bytes of data, header says shape {shape}")
    return body.reshape(shape)


def load_part(part: str, data_dir: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Loads 'train' or 'test' as (x uint8 [N, 28, 28], y int32 [N]); see `to_features`.

    Args:
      part: 'train' or 'test'.
      data_dir: The directory of the idx .gz files (default: `DEFAULT_DIR`, Debian's
        dataset-fashion-mnist).

    Raises:
      InputDataError: A file missing (with `argument` "data_dir") or unreadable.
    """
    directory = data_dir or DEFAULT_DIR
    images, labels = FILES[part]
    x = _read_idx(os.path.join(directory, images), 2051, 3)
    y = _read_idx(os.path.join(directory, labels), 2049, 1)
    if len(x) != len(y):
        raise InputDataError(f"directory {directory!r}: {len(x)} {part} images but {len(y)} labels")
    return x, y.astype(np.int32)


def to_features(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, 28, 28] -> float32 [N, 28, 28, 1] scaled to [0, 1]."""
    return (images.astype(np.float32) * np.float32(1.0 / 255.0))[..., None]


def long_tailed_subsample(y: np.ndarray, imbalance_ratio: float, seed: int) -> np.ndarray:
    """Sorted indices of the seeded per-class subsample of `long_tailed_counts`."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xFA5])
    keep = []
    for c, n in enumerate(long_tailed_counts(imbalance_ratio)):
        members = np.flatnonzero(y == c)
        if len(members) < n:
            raise InputDataError(f"Fashion-MNIST has {len(members)} training images of class {c}, need {n}")
        keep.append(rng.choice(members, size=int(n), replace=False))
    return np.sort(np.concatenate(keep))
