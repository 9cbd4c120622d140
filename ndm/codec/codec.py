"""Compress and decompress a set of discrete examples with a trained model (docs/compression.md).

The examples are coded in fixed batches, one after the other onto one ANS stack; the decoder
takes the batches off in reverse. The stack starts with seeded initial bits (enough for the
first batch's pops; the encoder retries with twice as many if the stack runs dry), and the
words at its bottom that coding never touched are left out of the file: the decoder
regenerates them from the seed. Net rate = file bits / (examples * dims).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from ndm.codec import chain
from ndm.codec.chain import model_tensor_kind
from ndm.codec.ans import CodecError, Stack, StackUnderflow, initial_words
from ndm.codec.fileformat import data_digest, model_digest, read_file, settings_digest, write_file
from ndm.model.diffusion import DiffusionModel


HEADER_KEYS = ("settings", "settings_sha256", "model_sha256", "n_examples", "event_shape", "levels", "initial_words", "untouched_initial_words", "data_sha256")


@dataclass(frozen=True)
class CodecSettings:
    """steps T; order "posterior" | "bitswap" | "auto"; grid bins per std; batch size; initial-bits seed."""

    steps: int
    order: str = "auto"
    bins_per_std: float = 16.0
    batch_size: int = 64
    seed: int = 0

    def resolved(self, model: DiffusionModel) -> "CodecSettings":
        order = chain.default_order(model) if self.order == "auto" else self.order
        chain.check_order(model, order)
        if self.steps < 1 or self.batch_size < 1 or self.bins_per_std <= 0:
            raise ValueError(f"steps and batch_size must be >= 1 and bins_per_std > 0, got {self}")
        return CodecSettings(self.steps, order, float(self.bins_per_std), int(self.batch_size), int(self.seed))


def _bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, disable=not progress)


def _check_model(model: DiffusionModel) -> None:
    if model.levels is None:
        raise CodecError("lossless coding needs discrete data (a model with K levels); this model's data is continuous")


def _batches(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


class _Scrambler:
    """The scramble points of one file: after each batch (covering the next batch's pops) and,
    for "bitswap", before each level's pop inside a batch (covering that pop), with twice the
    expected bits, keyed by (seed, batch, level). Level 0 keys the end of a batch."""

    def __init__(self, stack: Stack, model: DiffusionModel, s: CodecSettings, grid):
        self.stack, self.seed = stack, s.seed
        per_level = chain.level_pop_bits(model, s.steps, s.order, grid)
        self.level_words = [int(math.ceil(2.0 * s.batch_size * b / 32)) + 4 for b in per_level]
        self.batch_words = int(math.ceil(2.0 * s.batch_size * chain.pop_bits_per_example(model, s.steps, s.order, grid) / 32)) + 4

    def after_batch(self, j: int) -> None:
        self.stack.scramble((self.seed, j, 0), self.batch_words)

    def in_batch(self, j: int):
        return lambda level: self.stack.scramble((self.seed, j, level), self.level_words[level])


@torch.no_grad()
def encode(model: DiffusionModel, levels: Tensor, settings: CodecSettings, progress: bool = False) -> tuple[dict, np.ndarray, list[int]]:
    """(header, payload words, net bits each batch added to the stack) coding levels (N, *event_shape)
    of integer level indices."""
    _check_model(model)
    s = settings.resolved(model)
    levels = levels.to(model_tensor_kind(model).device).long()
    if tuple(levels.shape[1:]) != model.event_shape or int(levels.min()) < 0 or int(levels.max()) >= model.levels:
        raise CodecError(f"data of shape {tuple(levels.shape)} with levels in [{int(levels.min())}, {int(levels.max())}] does not fit the model ({model.event_shape}, K = {model.levels})")
    grid = chain.latent_grid(model, s.steps, s.order, s.bins_per_std)
    first = min(s.batch_size, levels.shape[0])
    need = chain.pop_bits_per_example(model, s.steps, s.order, grid) * first
    batches = _batches(levels.shape[0], s.batch_size)
    for attempt in range(8):
        n_words = int(math.ceil(1.25 * need * 2**attempt / 32)) + 8
        init = initial_words(n_words, s.seed)
        stack = Stack(init)
        scr = _Scrambler(stack, model, s, grid)
        bar = _bar(levels.shape[0], f"compress T={s.steps}", progress)
        try:
            batch_bits = []
            for j, (a, b) in enumerate(batches):
                before = stack.bits()
                chain.encode_batch(stack, model, levels[a:b], s.steps, s.order, grid, scr.in_batch(j))
                scr.after_batch(j)
                batch_bits.append(stack.bits() - before)
                bar.update(b - a)
        except StackUnderflow:
            continue
        finally:
            bar.close()
        break
    else:
        raise CodecError("the ANS stack kept running dry; this should not happen (report it)")
    words = stack.words()
    common = int(np.argmin(np.concatenate([words[: len(init)] == init[: len(words)], [False]])))
    keep = min(common, len(words) - 1)
    settings_d = asdict(s)
    header = {
        "settings": settings_d,
        "settings_sha256": settings_digest(settings_d),
        "model_sha256": model_digest(model),
        "n_examples": int(levels.shape[0]),
        "event_shape": list(model.event_shape),
        "levels": int(model.levels),
        "initial_words": int(n_words),
        "untouched_initial_words": int(keep),
        "data_sha256": data_digest(levels),
        "torch": torch.__version__,
    }
    return header, words[keep:], batch_bits


@torch.no_grad()
def decode(model: DiffusionModel, header: dict, payload: np.ndarray, progress: bool = False) -> Tensor:
    """The level indices (N, *event_shape), checked against the header's data hash."""
    _check_model(model)
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise CodecError(f"the file's header lacks {missing} (not written by this version of `ndm compress`)")
    if header["model_sha256"] != model_digest(model):
        raise CodecError("the model does not match the file (state_dict SHA-256 differs): decode with the model that wrote it")
    if header["settings_sha256"] != settings_digest(header["settings"]):
        raise CodecError("the coding settings in the header do not match their hash (corrupt header)")
    if tuple(header["event_shape"]) != model.event_shape or header["levels"] != model.levels:
        raise CodecError("the file's event shape or levels differ from the model's")
    s = CodecSettings(**header["settings"]).resolved(model)
    grid = chain.latent_grid(model, s.steps, s.order, s.bins_per_std)
    init = initial_words(header["initial_words"], s.seed)
    stack = Stack(np.concatenate([init[: header["untouched_initial_words"]], payload]).astype(np.uint32))
    n = header["n_examples"]
    out = torch.empty((n, *model.event_shape), dtype=torch.long)
    scr = _Scrambler(stack, model, s, grid)
    bar = _bar(n, f"decompress T={s.steps}", progress)
    try:
        for j, (a, b) in reversed(list(enumerate(_batches(n, s.batch_size)))):
            scr.after_batch(j)
            out[a:b] = chain.decode_batch(stack, model, b - a, s.steps, s.order, grid, scr.in_batch(j)).cpu()
            bar.update(b - a)
    except CodecError:
        raise
    except (ValueError, RuntimeError, OverflowError) as exc:  # e.g. non-finite parameters from garbage latents
        raise CodecError(f"decoding failed ({type(exc).__name__}: {str(exc)[:200]}): the file, the model or the platform differs from the one that wrote it") from None
    finally:
        bar.close()
    if not np.array_equal(stack.words(), init):
        raise CodecError("decoding did not end on the initial bits: the file, the model or the platform differs from the one that wrote it")
    if data_digest(out) != header["data_sha256"]:
        raise CodecError("the decoded data do not match the file's data checksum (wrong model, platform or corrupt file)")
    return out


def compress_to_file(model: DiffusionModel, levels: Tensor, settings: CodecSettings, path, progress: bool = False) -> dict:
    """Write the file; returns a summary with the net rate (file bits / (N D)) and its parts."""
    header, words, batch_bits = encode(model, levels, settings, progress)
    size = write_file(path, header, words)
    dims = levels.shape[0] * model.dims
    later = levels.shape[0] - min(settings.batch_size, levels.shape[0])
    # The batches after the first pop only bits that earlier batches pushed: their net bits per
    # dim is the coding rate without the initial bits (None with a single batch).
    steady = sum(batch_bits[1:]) / (later * model.dims) if later else None
    return {
        "file_bytes": size,
        "net_bpd": 8.0 * size / dims,
        "payload_bpd": 32.0 * len(words) / dims,
        "header_bpd": 8.0 * (size - 4 * len(words)) / dims,
        "steady_bpd": steady,
        "overhead_bpd": 8.0 * size / dims - steady if steady is not None else None,
        "n_examples": int(levels.shape[0]),
        "dims": model.dims,
        "settings": header["settings"],
    }


def decompress_file(model: DiffusionModel, path, progress: bool = False) -> Tensor:
    header, words = read_file(path)
    return decode(model, header, words, progress)
