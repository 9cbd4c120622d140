"""The entropy-coding primitives of the bits-back codec, over constriction's ANS stack.

Latents live on a fixed grid z = delta k (k an integer, delta per latent level). A Gaussian
N(mu, s^2) on that grid is constriction's QuantizedGaussian (bins of width 1 around the
integers) in the coordinates u = z / delta - c, with c = round(mu / delta) the centre symbol,
on a window of symbols [-W, W] around its own mean (W per latent level, about 10 of the
level's largest standard deviations) plus two escape symbols +-(W + 1) for values outside it.
An escaped value codes its distance e beyond the window as its bit length n (a categorical
with P(n) proportional to 2^-n: a near miss costs few bits) and the n - 1 bits below its
leading one (uniform 16-bit chunks). Only the p side of the chain has escapes (pop_gaussian).

Why a window: constriction keeps every symbol of a model's alphabet at probability >= 2^-24,
so a pop from a model over a huge alphabet would land anywhere in it with probability
alphabet / 2^24 (a wild latent); over +-10 standard deviations that leak is harmless. Why the
escape: a push of a latent that the model predicts badly (more than W grid steps off) must
still be exact.

Encoder and decoder must hand constriction bit-identical float64 parameters: both compute
mu and s with the same model on the same batch (docs/compression.md "Determinism").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

import constriction

_GAUSSIAN_MODELS: dict[tuple[int, bool], object] = {}
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
_UNIFORM = constriction.stream.model.Uniform()
_MAX_EXCESS_BITS = 48
_EXCESS_BITS = constriction.stream.model.Categorical(np.exp2(-np.arange(_MAX_EXCESS_BITS + 1.0)), perfect=False)
_CHUNK = 16


class CodecError(RuntimeError):
    """A file cannot be coded or decoded as asked (corrupt, truncated, wrong model, bad settings)."""


class StackUnderflow(CodecError):
    """The ANS stack ran out of bits during a pop (the encoder retries with more initial bits)."""


def _gaussian_model(window: int, escape: bool):
    """QuantizedGaussian on [-W, W], with escape: on [-(W + 1), W + 1]."""
    key = (window, escape)
    if key not in _GAUSSIAN_MODELS:
        edge = window + 1 if escape else window
        _GAUSSIAN_MODELS[key] = constriction.stream.model.QuantizedGaussian(-edge, edge)
    return _GAUSSIAN_MODELS[key]


def _grid_params(mean: Tensor, std: Tensor, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre symbol c, mean and std in window coordinates) per element, float64 for constriction."""
    m = mean.detach().to("cpu", torch.float64).flatten() / delta
    centre = torch.round(m)
    s = torch.broadcast_to(std.detach().to("cpu", torch.float64), mean.shape).flatten() / delta
    return centre.long().numpy(), (m - centre).numpy(), s.contiguous().numpy()


class Stack:
    """An ANS stack with pop (decode) and push (encode) of whole tensors of symbols.

    min_bits: the smallest size the stack reached right after a pop (pops only shrink it),
    which bounds how much of the initial bits at its bottom were never touched.
    """

    def __init__(self, words: np.ndarray | None = None):
        self.coder = constriction.stream.stack.AnsCoder(words) if words is not None else constriction.stream.stack.AnsCoder()
        self.min_bits = self.coder.num_valid_bits()

    def bits(self) -> int:
        return self.coder.num_valid_bits()

    def words(self) -> np.ndarray:
        return self.coder.get_compressed()

    def _after_pop(self) -> None:
        bits = self.coder.num_valid_bits()
        # The head holds 64 bits while the bulk has words left; less means a pop read past
        # the bottom of the stack, and its symbols are not draws from the model.
        if bits <= 64:
            raise StackUnderflow("the ANS stack ran out of bits during a pop")
        self.min_bits = min(self.min_bits, bits)

    # ---------------------------------------------------------------- latents on a grid
    def pop_gaussian(self, mean: Tensor, std: Tensor, delta: float, window: int, escape: bool) -> Tensor:
        """Draw z ~ N(mean, std^2) discretised on the grid delta Z; returns z (mean's dtype, device).

        escape: the model has escape symbols. Only the model's p side (pushed by the encoder)
        needs them: a pop from a model with escapes would, with probability ~2^-23 per symbol
        (constriction's floor), draw a latent arbitrarily far out, and every later step would
        pay for it. The q side (popped by the encoder) has none, so its pops stay in the window.
        """
        centre, m, s = _grid_params(mean, std, delta)
        sym = self.coder.decode(_gaussian_model(window, escape), m, s).astype(np.int64)
        self._after_pop()
        escaped = np.flatnonzero(np.abs(sym) > window)
        if escaped.size:
            sym[escaped] += np.sign(sym[escaped]) * self._pop_excess(escaped.size)
        k = torch.from_numpy(centre + sym)
        return (k.to(torch.float64) * delta).view(mean.shape).to(mean.dtype).to(mean.device)

    def push_gaussian(self, z: Tensor, mean: Tensor, std: Tensor, delta: float, window: int, escape: bool) -> None:
        """Code z (on the grid delta Z) with N(mean, std^2) discretised on that grid."""
        centre, m, s = _grid_params(mean, std, delta)
        k = torch.round(z.detach().to("cpu", torch.float64).flatten() / delta).long().numpy()
        sym = k - centre
        escaped = np.flatnonzero(np.abs(sym) > window)
        if escaped.size and not escape:
            raise CodecError(
                "a latent to push back lies outside the window it was popped from: the file was not "
                "written with this model and these settings, or it is corrupt"
            )
        if escaped.size:
            self._push_excess(np.abs(sym[escaped]) - (window + 1))
            sym = sym.copy()
            sym[escaped] = np.sign(sym[escaped]) * (window + 1)
        self.coder.encode_reverse(sym.astype(np.int32), _gaussian_model(window, escape), m, s)

    def _push_excess(self, excess: np.ndarray) -> None:
        """Push e >= 0 per escaped element: the bits below the leading one, then the bit length."""
        nbits = np.zeros(excess.shape, dtype=np.int64)
        nz = excess > 0
        nbits[nz] = np.floor(np.log2(excess[nz].astype(np.float64))).astype(np.int64) + 1
        # float log2 can be off by one near powers of two: fix it exactly in integers
        nbits[nz & (excess >= (np.int64(1) << nbits))] += 1
        nbits[nz & (excess < (np.int64(1) << np.maximum(nbits - 1, 0)))] -= 1
        if nbits.max() > _MAX_EXCESS_BITS:
            raise CodecError(
                "a latent lies more than 2^48 grid steps outside its coding window: the model's prediction "
                "is unusable at these steps (non-finite or exploding x_hat); check the model"
            )
        rest = excess - np.where(nz, np.int64(1) << np.maximum(nbits - 1, 0), 0)
        for j in reversed(range(_MAX_EXCESS_BITS // _CHUNK)):
            width = np.clip(nbits - 1 - _CHUNK * j, 0, _CHUNK)
            sel = width > 0
            if sel.any():
                chunk = (rest[sel] >> (_CHUNK * j)) & ((np.int64(1) << width[sel]) - 1)
                self.coder.encode_reverse(chunk.astype(np.int32), _UNIFORM, (np.int64(1) << width[sel]).astype(np.int32))
        self.coder.encode_reverse(nbits.astype(np.int32), _EXCESS_BITS)

    def _pop_excess(self, n: int) -> np.ndarray:
        nbits = self.coder.decode(_EXCESS_BITS, n).astype(np.int64)
        rest = np.zeros(n, dtype=np.int64)
        for j in range(_MAX_EXCESS_BITS // _CHUNK):
            width = np.clip(nbits - 1 - _CHUNK * j, 0, _CHUNK)
            sel = width > 0
            if sel.any():
                chunk = self.coder.decode(_UNIFORM, (np.int64(1) << width[sel]).astype(np.int32)).astype(np.int64)
                rest[sel] |= chunk << (_CHUNK * j)
        self._after_pop()
        return np.where(nbits > 0, (np.int64(1) << np.maximum(nbits - 1, 0)) + rest, 0)

    # ----------------------------------------------------------------------- scrambling
    def scramble(self, key: tuple[int, ...], n_words: int) -> None:
        """XOR the top n_words of the stack with a keyed PCG64 stream (its own inverse).

        Bits-back assumes the bits a pop reads are uniformly random. Bits that were just pushed
        are not when the pushed values sit in the model's tails (few-step models: p(z_s | z_t) is
        much narrower than the true reverse), and a pop from them draws tail values of q too,
        which costs more than the NELBO (docs/compression.md "Initial bits, batches and scrambling"). The mask makes
        them uniform; the decoder applies the same mask at the same point. The top word keeps
        its leading one (the stack's length and validity do not change).
        """
        words = self.coder.get_compressed()
        m = min(int(n_words), len(words))
        if m == 0:
            return
        mask = np.random.default_rng(list(key)).integers(0, 2**32, size=m, dtype=np.uint64).astype(np.uint32)
        top = int(words[-1])
        mask[-1] &= np.uint32((1 << (top.bit_length() - 1)) - 1)
        words[-m:] ^= mask
        self.coder = constriction.stream.stack.AnsCoder(words)

    # ------------------------------------------------------------------ data levels
    def pop_categorical(self, probs: Tensor) -> Tensor:
        """Draw one level per row of probs (N, K); returns (N,) long."""
        sym = self.coder.decode(_CATEGORICAL, probs.detach().to("cpu", torch.float64).contiguous().numpy())
        self._after_pop()
        return torch.from_numpy(sym.astype(np.int64))

    def push_categorical(self, levels: Tensor, probs: Tensor) -> None:
        self.coder.encode_reverse(
            levels.detach().to("cpu").flatten().numpy().astype(np.int32),
            _CATEGORICAL,
            probs.detach().to("cpu", torch.float64).contiguous().numpy(),
        )


def initial_words(n_words: int, seed: int) -> np.ndarray:
    """The bits-back initial bits: n_words uniform 32-bit words from a seeded PCG64 (the top
    word nonzero, as constriction requires). The decoder regenerates them from the header."""
    words = np.random.default_rng(seed).integers(0, 2**32, size=max(n_words, 1), dtype=np.uint64).astype(np.uint32)
    words[-1] |= np.uint32(1)
    return words
