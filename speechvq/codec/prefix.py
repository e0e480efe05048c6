"""Prefix codes for the codes of one packet: bits that end where the last code ends.

A 20 ms packet holds 5 codes. The range coder (`entropy.py`) writes whole
32-bit words and its flush carries its state, so 5 codes cost 8 bytes there
even when their information is 4, more than the 45 bits of the codes
themselves. A prefix code has no flush: each code's bits follow the last
one's, the packet ends at the next whole byte, and the reader knows where
because it decodes a known number of codes. That is why packets use this and
files the range coder.

The code is a table of code lengths `[R, K]` that the model file carries
(`SpeechVQ.packet_code`), so writer and reader build the same canonical
codewords from it:
  - R = 1: one code for every position; without a table, every code in
    ceil(log2 K) bits (9 for K = 512) (`PacketCode.fixed`);
  - R = K + 1, `bigram_code_lengths`: Huffman codes (Huffman 1952) from the
    code bigram counts of the model's training corpus (`speechvq train-prior
    --bigram`): row 0 codes a packet's first code by how often each code
    occurs, row 1 + p a code that follows code p, smoothed towards row 0.
    Packets stay independent (a lost one costs no others); within a packet,
    speech codes repeat and recur, which the bigram captures: on held-out
    speech 5.1 bits a code after the first instead of 8.6 by frequency alone
    or 9 fixed (docs/streaming.md).

Huffman is written here (some 30 lines) because no maintained package builds
length tables from integer weights with a stated tie rule; it runs once, when
the table is made, and the reader only needs the lengths.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

__all__ = ["PacketCode", "bigram_code_lengths", "huffman_lengths"]

# The weight of row 0 in every bigram row, as a share of the counts per code:
# row p's weights are counts[p] * M + (unigram + 1), M = (total + K) // (SMOOTHING * K).
# 0.1 measured best of 0.1, 0.5, 1 and 3 on held-out speech.
SMOOTHING = 0.1
MAX_LENGTH = 62  # codewords are built in int64


class PacketCode:
    """Codes `[n]` <-> bytes under code lengths `[R, K]` (R = 1, or K + 1: bigram rows).

    `encode` returns whole bytes (zero bits pad the last); `decode` reads
    bytes from `read_byte` until it has n codes, so a packet needs no length.
    """

    def __init__(self, lengths: np.ndarray):
        lengths = np.asarray(lengths)
        if lengths.ndim != 2 or lengths.shape[0] not in (1, lengths.shape[1] + 1):
            raise ValueError(f"code lengths must be [1 or K + 1, K], not {lengths.shape}")
        if lengths.min() < 1 or lengths.max() > MAX_LENGTH:
            raise ValueError(f"code lengths must lie in 1..{MAX_LENGTH}")
        if (np.exp2(-lengths.astype(np.float64)).sum(axis=1) > 1 + 1e-9).any():  # Kraft
            raise ValueError("code lengths that no prefix code has")
        self.lengths = lengths.astype(np.int64)
        self.num_symbols = lengths.shape[1]
        self.name = "bigram" if lengths.shape[0] > 1 else "fixed"
        self._tables: dict[int, _Table] = {}

    @classmethod
    def fixed(cls, num_symbols: int) -> PacketCode:
        bits = max(1, int(num_symbols - 1).bit_length())
        return cls(np.full((1, num_symbols), bits))

    def encode(self, codes: np.ndarray) -> bytes:
        bits, length = 0, 0
        previous: int | None = None
        for code in np.asarray(codes, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= code < self.num_symbols:
                raise ValueError(f"code {code} is not in [0, {self.num_symbols})")
            table = self._table(previous)
            n = int(table.lengths[code])
            bits, length = (bits << n) | int(table.values[code]), length + n
            previous = code
        pad = -length % 8
        return (bits << pad).to_bytes((length + pad) // 8, "big")

    def decode(self, read_byte: Callable[[], int], n: int) -> np.ndarray:
        out: list[int] = []
        buffer, available = 0, 0  # a byte read, and how many of its bits are unused
        previous: int | None = None
        for _ in range(n):
            table = self._table(previous)
            value, length = 0, 0
            while True:
                if available == 0:
                    buffer, available = read_byte(), 8
                available -= 1
                value, length = (value << 1) | ((buffer >> available) & 1), length + 1
                code = table.symbol(length, value)
                if code is not None:
                    break
                if length >= table.max_length:
                    raise ValueError("bits that are no codeword of this model (a damaged packet)")
            out.append(code)
            previous = code
        return np.asarray(out, dtype=np.int64)

    def prepare(self) -> PacketCode:
        """Build every row's codewords now (a live stream calls this before its first
        packet, so no packet pays for a row it meets first); returns itself."""
        for row in range(self.lengths.shape[0]):
            self._table(None if row == 0 else row - 1)
        return self

    def _table(self, previous: int | None) -> _Table:
        row = 0 if previous is None or self.lengths.shape[0] == 1 else previous + 1
        table = self._tables.get(row)
        if table is None:
            table = self._tables[row] = _Table(self.lengths[row])
        return table


class _Table:
    """The canonical codewords of one row of lengths, and what decoding needs."""

    def __init__(self, lengths: np.ndarray):
        # Canonical order: by length, then symbol. Codeword i is the Kraft sum of
        # the ones before it, in units of its own length (exact in int64).
        order = np.lexsort((np.arange(lengths.size), lengths))
        top = int(lengths.max())
        steps = np.left_shift(1, top - lengths[order])
        start = np.concatenate([[0], np.cumsum(steps)[:-1]])
        self.lengths = lengths
        self.values = np.empty_like(lengths)
        self.values[order] = np.right_shift(start, top - lengths[order])
        # Per length l: the first codeword, how many there are, where they start in `order`.
        count = np.bincount(lengths, minlength=top + 1)
        at = np.concatenate([[0], np.cumsum(count)[:-1]])
        first = np.zeros(top + 1, dtype=np.int64)
        has = count > 0
        first[has] = self.values[order[at[has]]]
        self.first, self.count, self.at = first.tolist(), count.tolist(), at.tolist()
        self.order = order.tolist()
        self.max_length = top

    def symbol(self, length: int, value: int) -> int | None:
        """The symbol whose codeword is `value` in `length` bits, if any."""
        i = value - self.first[length]
        if 0 <= i < self.count[length]:
            return self.order[self.at[length] + i]
        return None


def huffman_lengths(weights: np.ndarray) -> list[int]:
    """Huffman code lengths for positive integer `weights` `[K]`, K >= 2.

    Ties are broken by the smallest symbol in each subtree, so the lengths
    depend on the weights alone (integers: no float rounding either).
    """
    weights = [int(w) for w in np.asarray(weights).reshape(-1)]
    if len(weights) < 2 or min(weights) <= 0:
        raise ValueError("Huffman lengths need at least 2 positive weights")
    heap = [(w, s, s) for s, w in enumerate(weights)]  # (weight, smallest symbol, node)
    heapq.heapify(heap)
    parent: dict[int, int] = {}
    node = len(weights)
    while len(heap) > 1:
        w1, s1, n1 = heapq.heappop(heap)
        w2, s2, n2 = heapq.heappop(heap)
        parent[n1] = parent[n2] = node
        heapq.heappush(heap, (w1 + w2, min(s1, s2), node))
        node += 1
    depth = {node - 1: 0}
    for n in range(node - 2, -1, -1):  # parents are numbered after their children
        depth[n] = depth[parent[n]] + 1
    return [depth[s] for s in range(len(weights))]


def bigram_code_lengths(counts: np.ndarray) -> np.ndarray:
    """Code lengths `[K + 1, K]` uint8 for `PacketCode` from bigram counts `[K, K]`
    (`counts[p, c]`: how often code c followed code p). Takes about a second for K = 512."""
    counts = np.asarray(counts, dtype=np.int64)
    K = counts.shape[0]
    if counts.shape != (K, K) or (counts < 0).any():
        raise ValueError(f"bigram counts must be a [K, K] table of counts, not {counts.shape}")
    unigram = counts.sum(axis=0) + 1  # how often each code follows another, add one
    scale = max(1, int((int(counts.sum()) + K) // (SMOOTHING * K)))
    rows = [huffman_lengths(unigram)]
    rows += [huffman_lengths(counts[p] * scale + unigram) for p in range(K)]
    lengths = np.asarray(rows, dtype=np.int64)
    if lengths.max() > MAX_LENGTH:
        raise ValueError(f"a codeword longer than {MAX_LENGTH} bits: counts too skewed")
    return lengths.astype(np.uint8)
