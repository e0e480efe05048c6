"""Range coding of code sequences: exact round trips, near-ideal size, a pinned format."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechvq.codec.entropy import (
    AdaptiveSource,
    ProbabilitySource,
    UniformSource,
    UnigramSource,
    decode_codes,
    encode_codes,
    ideal_bits,
    make_source,
    softmax_probabilities,
)

pytest.importorskip("constriction")


class MarkovSource:
    """A fixed random Markov chain over K: the row used is chosen by the previous code.

    `rows` distinct Dirichlet(alpha) rows keep construction cheap for large K;
    small alpha gives peaky rows, large alpha nearly flat ones.
    """

    name = "markov"

    def __init__(self, num_symbols: int, alpha: float, seed: int, rows: int = 16):
        rng = np.random.default_rng(seed)
        self.num_symbols = num_symbols
        self.table = rng.dirichlet(np.full(num_symbols, alpha), size=rows)
        self.calls: list[int | None] = []

    def reset(self) -> None:
        self.calls = []

    def next(self, previous_code: int | None) -> np.ndarray:
        self.calls.append(previous_code)
        return self.table[0 if previous_code is None else previous_code % len(self.table)]

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        codes, prev = [], None
        for _ in range(n):
            p = self.next(prev)
            prev = int(rng.choice(self.num_symbols, p=p / p.sum()))
            codes.append(prev)
        self.reset()
        return np.array(codes, dtype=np.int64)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    K=st.integers(2, 1024),
    n=st.integers(0, 2000),
    alpha=st.sampled_from([0.01, 0.1, 1.0, 100.0]),
    typical=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_is_exact(K, n, alpha, typical, seed):
    source = MarkovSource(K, alpha, seed)
    if typical:  # codes drawn from the model itself
        codes = source.sample(n, seed)
    else:  # arbitrary codes, many of them improbable under a peaky model
        codes = np.random.default_rng(seed).integers(0, K, n)
    data = encode_codes(codes, source)
    assert len(data) % 4 == 0
    decoded = decode_codes(data, n, source)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, codes)


def test_zero_length():
    source = UniformSource(512)
    assert encode_codes(np.zeros(0, np.int64), source) == b""
    assert decode_codes(b"", 0, source).shape == (0,)


def test_source_is_called_identically_on_both_sides():
    source = MarkovSource(8, 1.0, 0)
    codes = np.array([3, 1, 4, 1, 5])
    data = encode_codes(codes, source)
    assert source.calls == [None, 3, 1, 4, 1]
    decode_codes(data, len(codes), source)
    assert source.calls == [None, 3, 1, 4, 1]


class CertainOfZero:
    """Puts all its mass on code 0 (the rest gets exactly 0.0 or a subnormal)."""

    name = "certain"

    def __init__(self, K: int, rest: float):
        self.num_symbols = K
        self.p = np.full(K, rest)
        self.p[0] = 1.0

    def reset(self) -> None:
        pass

    def next(self, previous_code: int | None) -> np.ndarray:
        return self.p


@pytest.mark.parametrize("rest", [0.0, 1e-300])
def test_impossible_codes_still_round_trip(rest):
    source = CertainOfZero(512, rest)
    codes = np.random.default_rng(0).integers(1, 512, 300)
    data = encode_codes(codes, source)
    np.testing.assert_array_equal(decode_codes(data, len(codes), source), codes)
    # constriction's floor is 2^-24, so an "impossible" code costs at most ~24 bits.
    assert 8 * len(data) <= 25 * len(codes) + 64


def test_size_is_close_to_ideal():
    for alpha in (0.05, 1.0):
        source = MarkovSource(512, alpha, seed=1, rows=64)
        codes = source.sample(4000, seed=2)
        ideal = ideal_bits(codes, source)
        actual = 8 * len(encode_codes(codes, source))
        assert ideal <= actual <= 1.01 * ideal + 64, (alpha, ideal, actual)


def test_uniform_costs_log2_k():
    codes = np.random.default_rng(0).integers(0, 512, 1000)
    data = encode_codes(codes, UniformSource(512))
    assert 9 * 1000 <= 8 * len(data) <= 9 * 1000 + 64


@pytest.mark.parametrize("source", [AdaptiveSource(300), UnigramSource(np.arange(300))])
def test_static_sources_round_trip(source):
    codes = np.random.default_rng(3).integers(0, 300, 700)
    data = encode_codes(codes, source)
    np.testing.assert_array_equal(decode_codes(data, len(codes), source), codes)


def test_adaptive_learns_repetition_and_never_costs_much_more_than_uniform():
    # Speech codes repeat and recur; the adaptive model should find that...
    rng = np.random.default_rng(0)
    units = rng.integers(0, 512, 40)
    codes = np.repeat(units[rng.integers(0, 40, 200)], 4)
    data = encode_codes(codes, AdaptiveSource(512))
    assert 8 * len(data) < 0.4 * 9 * len(codes)
    np.testing.assert_array_equal(decode_codes(data, len(codes), AdaptiveSource(512)), codes)
    # ...and, as a Bayesian mixture holding a uniform expert, lose at most log2(3) bits
    # (plus the coder's few bytes) on codes with no pattern at all.
    codes = rng.integers(0, 512, 1500)
    assert ideal_bits(codes, AdaptiveSource(512)) <= 9 * len(codes) + np.log2(3)
    assert 8 * len(encode_codes(codes, AdaptiveSource(512))) <= 9 * len(codes) + 64


class RationalSource:
    """p_k proportional to 1 / (1 + ((k - 3 * prev) mod K)): only IEEE-exact arithmetic,
    so the golden bytes below do not depend on NumPy's random streams or libm."""

    name = "rational"
    num_symbols = 512

    def reset(self) -> None:
        pass

    def next(self, previous_code: int | None) -> np.ndarray:
        k = np.arange(self.num_symbols)
        return 1.0 / (1.0 + (k - 3 * (previous_code or 0)) % self.num_symbols)


def test_format_is_pinned():
    # The quantisation of probabilities is part of the file format: if an upgrade of
    # constriction (or a change here) alters these bytes, old .svq files would no
    # longer decode. Bump entropy.CODER_NAME and the format rather than this hash.
    t = np.arange(600)
    codes = (t * t * 7 + 3 * t) % 512 * (t % 3 == 0) + (t % 3 != 0) * (t % 5)
    data = encode_codes(codes, RationalSource())
    np.testing.assert_array_equal(decode_codes(data, len(codes), RationalSource()), codes)
    assert hashlib.sha256(data).hexdigest()[:16] == GOLDEN, hashlib.sha256(data).hexdigest()


GOLDEN = "d135e5d956ea0980"  # same bytes from constriction 0.4.0, 0.4.2 and 0.5.0


def test_bad_input_is_refused():
    source = UniformSource(4)
    with pytest.raises(ValueError, match="codes must lie"):
        encode_codes(np.array([0, 4]), source)
    with pytest.raises(ValueError, match="integers"):
        encode_codes(np.array([0.0, 1.0]), source)
    with pytest.raises(ValueError, match="32-bit words"):
        decode_codes(b"abc", 1, source)

    class Broken(UniformSource):
        def next(self, previous_code):
            return np.array([0.5, np.nan, 0.5, 0.0])

    with pytest.raises(ValueError, match="finite"):
        encode_codes(np.array([0]), Broken(4))

    class WrongShape(UniformSource):
        def next(self, previous_code):
            return np.ones(3)

    with pytest.raises(ValueError, match="shape"):
        encode_codes(np.array([0]), WrongShape(4))


def test_sources_follow_the_protocol():
    for source in (
        UniformSource(4),
        UnigramSource(np.ones(4)),
        AdaptiveSource(4),
        MarkovSource(4, 1, 0),
    ):
        assert isinstance(source, ProbabilitySource)
    assert make_source("uniform", 4).name == "uniform"
    assert make_source("adaptive", 4).name == "adaptive"
    with pytest.raises(ValueError):
        make_source("prior", 4)


def test_softmax_probabilities():
    logits = np.array([1000.0, 999.0, -1e30, 0.0], dtype=np.float32)
    p = softmax_probabilities(logits)
    assert p.dtype == np.float64 and np.isfinite(p).all()
    assert abs(p.sum() - 1.0) < 1e-12 and p[0] > p[1] > p[3] >= p[2] >= 0
    assert softmax_probabilities(logits).tobytes() == p.tobytes()
