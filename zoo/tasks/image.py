"""Image classification from MNIST-style idx files (Fashion-MNIST as Debian's `dataset-fashion-mnist`
ships it), from `{split}.npz` arrays (`images` uint8 (N, H, W) or (N, H, W, C), `labels` int), or
from a folder per split with a subfolder per class (`train/cat/1.png`; needs Pillow; every image is
resized to the first one's size).

idx files: `train-images-idx3-ubyte[.gz]` / `train-labels-idx1-ubyte[.gz]` and the `t10k-` pair for
test. idx sets have no validation split: the last 10% of train is held out for it (and left out
of train), always the same examples."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import Examples, TaskError, check_split

FASHION_MNIST_DIRS = (
    "/usr/share/fashion-mnist",
    "/usr/share/datasets/fashion-mnist",
    "/usr/share/dataset-fashion-mnist",
)
FASHION_MNIST_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IDX_PREFIX = {"train": "train", "validation": "train", "test": "t10k"}
VALIDATION_SHARE = 0.1


def read_idx(path: Path) -> np.ndarray:
    """An idx file (big-endian header: zero, zero, dtype code 0x08 = uint8, rank, then the dims)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TaskError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise TaskError(f"{path} is not an idx file of unsigned bytes")
    rank = data[3]
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(dims)):
        raise TaskError(f"{path}: header says {dims} but the file holds {body.size} values")
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise TaskError(f"{root} has neither {stem} nor {stem}.gz")


@dataclass
class ImageClassification:
    name: str
    source: str
    label_names: list[str] = field(default_factory=list)
    auto_task: str = "image-classification"
    _loaded: dict = field(default_factory=dict, repr=False)

    @property
    def dataset(self) -> str:
        return self.name

    @property
    def num_labels(self) -> int:
        self.examples("train")
        return len(self.label_names)

    def _arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        root = Path(self.source)
        if not root.is_dir():
            raise TaskError(f"image data directory {root} does not exist")
        if (root / split).is_dir():
            return _read_folder(root / split, self.label_names)
        if (root / f"{split}.npz").is_file():
            with np.load(root / f"{split}.npz") as npz:
                return npz["images"], npz["labels"]
        prefix = IDX_PREFIX[split]
        images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
        if prefix == "train":
            cut = len(labels) - int(len(labels) * VALIDATION_SHARE)
            part = slice(cut, None) if split == "validation" else slice(None, cut)
            images, labels = images[part], labels[part]
        return images, labels

    def examples(self, split: str) -> Examples:
        check_split(split)
        if split not in self._loaded:
            images, labels = self._arrays(split)
            if images.ndim == 3:
                images = images[:, None]  # (N, 1, H, W)
            elif images.ndim == 4:
                images = images.transpose(0, 3, 1, 2)  # channels last -> first
            else:
                raise TaskError(f"{self.source}: images must be (N, H, W) or (N, H, W, C), got {images.shape}")
            if len(images) != len(labels):
                raise TaskError(f"{self.source} ({split}): {len(images)} images but {len(labels)} labels")
            if not self.label_names and (Path(self.source) / split).is_dir():
                self.label_names = sorted(p.name for p in (Path(self.source) / split).iterdir() if p.is_dir())
            if not self.label_names:
                count = int(labels.max()) + 1
                default = FASHION_MNIST_LABELS if count == len(FASHION_MNIST_LABELS) else None
                self.label_names = default or [str(i) for i in range(count)]
            self._loaded[split] = Examples(torch.from_numpy(np.array(images, copy=True)), [int(v) for v in labels])
        return self._loaded[split]

    def collator(self, model_dir):
        return _collate

    def name_labels_from(self, model_dir) -> None:
        """Image classes are named by their folders or the dataset's own list: nothing to take from a model."""

    def features(self, split: str, model_dir, *, limit: int | None = None, max_length: int | None = None) -> list[dict]:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
        ex = self.examples(split).subset(limit)
        assert isinstance(ex.inputs, torch.Tensor)  # `examples` keeps images as one uint8 tensor
        pixels = to_pixels(ex.inputs, config.num_channels, config.image_size)
        return [{"pixel_values": p, "labels": y} for p, y in zip(pixels, ex.labels)]


def to_pixels(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, channels, size, size) in [-1, 1], resized and channel-repeated."""
    x = images.float().div(255).sub(0.5).div(0.5)
    if x.shape[1] != channels:
        if x.shape[1] != 1:
            raise TaskError(f"the model takes {channels}-channel images, the data has {x.shape[1]} channels")
        x = x.expand(-1, channels, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.contiguous()


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _read_folder(root: Path, known: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """split/<class>/<image>: class names sorted (train decides them), images as uint8 arrays."""
    try:
        from PIL import Image
    except ImportError:
        raise TaskError("reading image folders needs Pillow", hint="pip install 'zoo-compress[images]'") from None
    classes = known or sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels, size = [], [], None
    for label, name in enumerate(classes):
        for path in sorted((root / name).glob("*")) if (root / name).is_dir() else []:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB")
                    size = size or img.size
                    images.append(np.asarray(img.resize(size)))
            except OSError as exc:
                raise TaskError(f"cannot read image {path}: {exc}") from None
            labels.append(label)
    if not images:
        raise TaskError(f"{root} holds no images in class subfolders", hint="expected SPLIT/CLASS/IMAGE.png")
    return np.stack(images), np.array(labels)


def _collate(features: list[dict]) -> dict:
    batch = {"pixel_values": torch.stack([f["pixel_values"] for f in features])}
    if "labels" in features[0]:
        batch["labels"] = torch.tensor([f["labels"] for f in features])
    return batch


def fashion_mnist_dir() -> str | None:
    for d in FASHION_MNIST_DIRS:
        if Path(d).is_dir():
            return d
    return None
