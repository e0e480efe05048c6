"""Lossless entropy coding of a code sequence under a step-wise probability model.

VQ-VAE §4.3 sends speech as 250 codes/s from K = 512 (9 bits each, 2.25 kbit/s
nominal); a model that predicts each code from the previous ones lowers that to
its cross-entropy. Range coding (Martin 1979; Witten, Neal & Cleary 1987) spends
within a few bytes of -sum(log2 p(code_t | codes_<t)) bits on a whole sequence.

The model is a `ProbabilitySource`: called once per step, in order, with the
previous code, it returns the distribution of the next one. Encoder and decoder
call it with the same history, so they see the same distributions -- provided
they are *bit-identical*. A neural prior must therefore take the same code path
on both sides (its step-by-step incremental path, not a teacher-forced pass
on one side only), with the same torch build and thread count; `codes_crc32` in
the `.svq` header (see `bitstream.py`) turns any disagreement into a plain error
instead of wrong speech.

The coder is `constriction` (Bamler 2022), a maintained Rust range coder: 32-bit
words, 24-bit probability precision. `Categorical(p, lazy=True)` (which implies
`perfect=False`) quantises float probabilities to integers deterministically and
gives every symbol at least 2^-24, so a code the model thought impossible still
round-trips, at a cost of at most 24 bits. The quantisation is part of the file
format: `tests/test_entropy.py` pins it with a golden vector.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CODER_NAME",
    "AdaptiveSource",
    "ProbabilitySource",
    "UniformSource",
    "UnigramSource",
    "decode_codes",
    "encode_codes",
    "ideal_bits",
    "make_source",
    "softmax_probabilities",
]

# Names the coder and its quantisation in the `.svq` header; change it whenever a
# change here (or in constriction) would decode old payloads differently.
CODER_NAME = "constriction-range-lazy-v1"


@runtime_checkable
class ProbabilitySource(Protocol):
    """A step-wise model over codes `0 .. num_symbols - 1`.

    `reset()` starts a sequence; then `next(None)` gives the distribution of code 0
    and `next(code_{t-1})` that of code t. The result is a `[K]` array of
    non-negative finite floats with a positive sum (it need not be normalised).
    Encoder and decoder make exactly the same calls in the same order.
    """

    name: str
    num_symbols: int

    def reset(self) -> None: ...

    def next(self, previous_code: int | None) -> np.ndarray: ...


class UniformSource:
    """Every code equally likely: log2(K) bits each (9 for K = 512)."""

    name = "uniform"

    def __init__(self, num_symbols: int):
        self.num_symbols = int(num_symbols)
        self._p = np.full(self.num_symbols, 1.0 / self.num_symbols)

    def reset(self) -> None:
        pass

    def next(self, previous_code: int | None) -> np.ndarray:
        return self._p


class UnigramSource:
    """A fixed code histogram, e.g. the quantiser's usage counts stored in the model.

    Laplace smoothing (add one) keeps codes that were never counted codable. The
    decoder must be given the very same counts, so take them from the model file
    (covered by its hash), never from the audio being coded.
    """

    name = "unigram"

    def __init__(self, counts: np.ndarray):
        counts = np.asarray(counts, dtype=np.float64).reshape(-1)
        if not (np.isfinite(counts).all() and (counts >= 0).all()):
            raise ValueError("unigram counts must be finite and non-negative")
        self.num_symbols = counts.size
        # fsum: exactly rounded, so the total does not depend on summation order.
        self._p = (counts + 1.0) / (math.fsum(counts.tolist()) + counts.size)

    @classmethod
    def from_codes(cls, codes: np.ndarray, num_symbols: int) -> UnigramSource:
        """Count `[T]` codes (e.g. a training corpus) into a histogram over K."""
        return cls(np.bincount(np.asarray(codes, dtype=np.int64), minlength=num_symbols))

    def reset(self) -> None:
        pass

    def next(self, previous_code: int | None) -> np.ndarray:
        return self._p


class AdaptiveSource:
    """A model learnt from the sequence itself as it is coded: no side information.

    A Bayesian mixture of three experts, each weighted by how well it predicted
    the codes so far (the weight of expert i is multiplied by p_i(code) at each
    step), so the mixture never costs more than log2(3) bits over the best of:
      - uniform: log2(K) bits per code, the safe choice for patternless codes;
      - order 0: the add-one (Laplace) histogram of the codes so far;
      - order 1: the counts of codes after the previous code, smoothed towards
        order 0 with Witten-Bell's weight (Witten & Bell 1991, "The
        zero-frequency problem"): a context followed by many distinct codes
        trusts its own counts less.
    Speech codes repeat and recur, which order 1 captures (on k-means proxy codes
    of VCTK speech at 250 Hz: 4.2 bits per code instead of 9); the prior, with
    its longer context, should do better still. Only integer counts, `+`, `*`
    and `/` are used, so encoder and decoder compute identical floats anywhere.
    There are no parameters: the name "adaptive" in a file fixes the model.
    """

    name = "adaptive"

    def __init__(self, num_symbols: int):
        self.num_symbols = int(num_symbols)
        self.reset()

    def reset(self) -> None:
        K = self.num_symbols
        self._unigram = np.zeros(K, dtype=np.int64)
        self._seen = 0
        # Sparse order-1 rows (a short file visits few contexts): counts, total, distinct.
        self._rows: dict[int, np.ndarray] = {}
        self._row_total: dict[int, int] = {}
        self._row_distinct: dict[int, int] = {}
        self._context: int | None = None
        self._weights = (1 / 3, 1 / 3, 1 / 3)
        self._uniform = np.full(K, 1.0 / K)
        self._experts: tuple[np.ndarray, ...] = ()

    def next(self, previous_code: int | None) -> np.ndarray:
        if previous_code is not None:
            self._update(int(previous_code))
        order0 = (self._unigram + 1.0) / (self._seen + self.num_symbols)
        order1 = order0
        if self._context in self._rows:
            backoff = float(self._row_distinct[self._context])
            total = self._row_total[self._context] + backoff
            order1 = (self._rows[self._context] + backoff * order0) / total
        self._experts = (self._uniform, order0, order1)
        w0, w1, w2 = self._weights
        return w0 * self._uniform + w1 * order0 + w2 * order1

    def _update(self, code: int) -> None:
        # Bayes' rule on the experts' weights, with the probabilities they gave `code`.
        w = [w * float(p[code]) for w, p in zip(self._weights, self._experts, strict=True)]
        total = w[0] + w[1] + w[2]
        self._weights = (w[0] / total, w[1] / total, w[2] / total)
        if self._context is not None:
            ctx = self._context
            if ctx not in self._rows:
                self._rows[ctx] = np.zeros(self.num_symbols, dtype=np.int64)
                self._row_total[ctx] = self._row_distinct[ctx] = 0
            row = self._rows[ctx]
            self._row_distinct[ctx] += int(row[code] == 0)
            self._row_total[ctx] += 1
            row[code] += 1
        self._unigram[code] += 1
        self._seen += 1
        self._context = code


def make_source(name: str, num_symbols: int) -> ProbabilitySource:
    """The static source called `name` ("uniform" or "adaptive"), for writer and reader.

    "unigram" needs the model's counts and "prior" the trained prior: the caller
    builds those (see docs/bitstream.md).
    """
    if name == UniformSource.name:
        return UniformSource(num_symbols)
    if name == AdaptiveSource.name:
        return AdaptiveSource(num_symbols)
    raise ValueError(f"entropy model {name!r} needs a trained model; build its source there")


def softmax_probabilities(logits: np.ndarray) -> np.ndarray:
    """`[K]` logits (any float dtype, e.g. a prior's output) -> float64 probabilities.

    Done in NumPy float64, elementwise and with the total added in index order,
    so on one machine the same logits always give the same bits; use it on both
    sides of every source built on a network. (Across CPUs NumPy's vectorised
    `exp` may differ in the last bit, as may the network itself.)
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    e = np.exp(z - z.max())
    return e / np.cumsum(e)[-1]  # cumsum: one fixed order, whatever blocking `sum` would use


def _distribution(p: np.ndarray, num_symbols: int, step: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.shape != (num_symbols,):
        raise ValueError(
            f"step {step}: probability source gave shape {p.shape}, expected [K={num_symbols}]"
        )
    # Two reductions cover every defect: min() is NaN if any element is, and a sum
    # that is not finite and positive means an Inf, an overflow, or all zeros.
    if not (p.min() >= 0 and 0 < p.sum() < np.inf):
        raise ValueError(f"step {step}: probabilities must be finite, non-negative, not all zero")
    return p


def encode_codes(codes: np.ndarray, source: ProbabilitySource) -> bytes:
    """Range-code `[T]` integer codes in [0, K) under `source`; returns the payload bytes.

    The payload is whole little-endian 32-bit words (empty for T = 0); its length
    does not say T, so the container stores T.
    """
    import constriction

    Categorical = constriction.stream.model.Categorical
    codes = np.asarray(codes).reshape(-1)
    K = source.num_symbols
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= K):
        raise ValueError(f"codes must lie in [0, {K}), got [{codes.min()}, {codes.max()}]")
    encoder = constriction.stream.queue.RangeEncoder()
    source.reset()
    previous: int | None = None
    for t, code in enumerate(codes.tolist()):
        p = _distribution(source.next(previous), K, t)
        encoder.encode(code, Categorical(p, lazy=True))
        previous = code
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_codes(data: bytes, n: int, source: ProbabilitySource) -> np.ndarray:
    """Inverse of `encode_codes`: the `[n]` int64 codes, given the same `source`.

    Raises ValueError if `data` is not whole 32-bit words. A damaged payload is
    not detected here (the range decoder reads any bits as some codes): the
    container's CRCs do that.
    """
    import constriction

    Categorical = constriction.stream.model.Categorical
    if len(data) % 4:
        raise ValueError(f"code payload is {len(data)} bytes, not whole 32-bit words")
    if n < 0:
        raise ValueError(f"negative code count {n}")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    K = source.num_symbols
    out = np.empty(n, dtype=np.int64)
    source.reset()
    previous: int | None = None
    for t in range(n):
        p = _distribution(source.next(previous), K, t)
        previous = int(decoder.decode(Categorical(p, lazy=True)))
        out[t] = previous
    return out


def ideal_bits(codes: np.ndarray, source: ProbabilitySource) -> float:
    """-sum(log2 p(code_t | codes_<t)): the size an ideal coder would reach, in bits."""
    codes = np.asarray(codes).reshape(-1)
    source.reset()
    previous: int | None = None
    total = 0.0
    for t, code in enumerate(codes.tolist()):
        p = _distribution(source.next(previous), source.num_symbols, t)
        total -= float(np.log2(p[code] / p.sum()))
        previous = code
    return total
