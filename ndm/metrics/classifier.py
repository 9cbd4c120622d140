"""Frechet distance in the features of a small classifier trained on the dataset itself.

Inception features mean little for 8x8 digits or for small patches when no Inception
weights are available, so (docs/protocol.md) such datasets get a classifier trained in
the pipeline on their own labels (digits: the digit; patches: the source photograph),
and the Frechet distance in its penultimate features is reported as ``fd_classifier``,
never as FID. The feature-extractor id includes a hash of the classifier's weights, so
statistics from one classifier are never compared with samples seen by another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ndm.atomic import atomic_torch_save
from ndm.model.data_space import to_model_space
from ndm.metrics.inception import state_dict_digest

__all__ = [
    "ClassifierFeatures",
    "FeatureClassifier",
    "classifier_accuracy",
    "classifier_features",
    "load_classifier",
    "save_classifier",
    "train_feature_classifier",
]


class FeatureClassifier(nn.Module):
    """A three-layer CNN: uint8 images -> ``feature_dim`` features -> class logits.

    The features are the pre-activation output of the penultimate linear layer: no ReLU
    zeros, so their covariance is full rank. Input scaling uses the dataset's levels
    (bin centres in [-1, 1]) so the model accepts exactly what the data loaders emit.
    """

    def __init__(self, in_channels: int, n_classes: int, levels: int, feature_dim: int = 64, width: int = 32):
        super().__init__()
        self.config = {
            "in_channels": int(in_channels),
            "n_classes": int(n_classes),
            "levels": int(levels),
            "feature_dim": int(feature_dim),
            "width": int(width),
        }
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(8 * w, feature_dim),
        )  # fmt: skip
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(feature_dim, n_classes))

    @property
    def levels(self) -> int:
        return self.config["levels"]

    def features(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != self.config["in_channels"]:
            raise TypeError(
                f"expected uint8 images (N, {self.config['in_channels']}, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        return self.body(to_model_space(images, self.levels))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def train_feature_classifier(
    dataset: Any,  # an ndm.pipeline.data Dataset (train/test levels and labels)
    seed: int,
    steps: int = 1000,
    *,
    batch_size: int = 128,
    lr: float = 2e-3,
    feature_dim: int = 64,
    width: int = 32,
) -> FeatureClassifier:
    """Train a :class:`FeatureClassifier` on ``dataset.train`` / ``train_labels`` (Adam, cosine LR).

    Deterministic for a given seed on a given machine: initialisation and minibatches come
    from private generators, not the global RNG.
    """
    if dataset.levels is None or dataset.train_labels is None:
        raise ValueError(f"dataset {dataset.name!r} needs uint8 images and labels for a feature classifier")
    x, y = dataset.train, dataset.train_labels
    n_classes = int(y.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureClassifier(x.shape[1], n_classes, dataset.levels, feature_dim, width)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def classifier_features(model: FeatureClassifier, images_uint8: Tensor, batch_size: int = 1024) -> np.ndarray:
    """Penultimate features (N, feature_dim), float64, in eval mode without gradients."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images_uint8), batch_size):
            out.append(model.features(images_uint8[start : start + batch_size]).to(torch.float64).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config["feature_dim"]))


def classifier_accuracy(model: FeatureClassifier, images_uint8: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy: the check that the features carry class information."""
    with torch.inference_mode():
        pred = torch.cat([model(images_uint8[s : s + 1024]).argmax(1) for s in range(0, len(images_uint8), 1024)])
    return float((pred == labels).to(torch.float64).mean())


def save_classifier(model: FeatureClassifier, path: str | Path) -> Path:
    """Save config + state dict atomically; only tensors and ints, so ``weights_only=True`` can load it."""
    return atomic_torch_save({"config": dict(model.config), "state_dict": model.state_dict()}, path)


def load_classifier(path: str | Path) -> FeatureClassifier:
    """Load a classifier saved by :func:`save_classifier` (``torch.load(weights_only=True)``)."""
    blob: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = FeatureClassifier(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model.eval()


class ClassifierFeatures:
    """Feature extractor for :mod:`ndm.metrics.frechet` (metric ``fd_classifier``)."""

    metric = "fd_classifier"

    def __init__(self, model: FeatureClassifier, dataset_name: str):
        self.model = model.eval()
        self.dataset_name = dataset_name
        self.id = f"classifier/{dataset_name}/weights:{state_dict_digest(model.state_dict())[:12]}"

    def __call__(self, images: Tensor) -> np.ndarray:
        return classifier_features(self.model, images)
