"""Per-channel histograms whose range grows by doubling, so partial counts merge exactly."""
from __future__ import annotations

import math

import numpy as np

from runtime.errors import InputError

MIN_EXP = -16  # the range is at least [0, 2**-16): the same range whatever the order of the data


class Histogram:
    """Per-channel counts over [lo, hi) in `bins` equal bins, hi = 2**exp > every |value|, lo = -hi or 0.

    The range starts as the smallest that holds the data and doubles when needed: each doubling
    adds pairs of bins, so counts stay exact, and the final range depends only on the data.
    """

    def __init__(self, channels: int, bins: int):
        if bins < 4 or bins & (bins - 1):
            raise InputError(f"bins must be a power of two of at least 4 (edges then nest exactly); got {bins}")
        self.bins, self.exp, self.signed = bins, MIN_EXP, False
        self.counts = np.zeros((channels, bins), np.int64)

    @property
    def edges(self) -> np.ndarray:
        hi = 2.0 ** self.exp
        return np.linspace(-hi if self.signed else 0.0, hi, self.bins + 1)

    def add(self, rows: np.ndarray, lo: float, hi: float) -> None:
        """Count the values of a [rows, m x channels] array (column j: channel j % channels, as in
        OutputStats' wide view) whose smallest and largest values are lo and hi."""
        if not rows.size:
            return
        self._grow(max(hi, -lo), lo < 0)
        width_inv = np.float32(self.bins / (2.0 ** self.exp * (2 if self.signed else 1)))  # a power of two
        scaled = rows * width_inv  # exact: scaling by a power of two
        # Truncation is floor for values >= 0 and saves a pass on (typical) ReLU maps.
        idx = (np.floor(scaled, out=scaled) if lo < 0 else scaled).astype(np.intp)
        channel = np.arange(rows.shape[1]) % len(self.counts)
        idx += channel * self.bins + (self.bins // 2 if self.signed else 0)
        self.counts += np.bincount(idx.ravel(), minlength=self.counts.size).reshape(self.counts.shape)

    def merge(self, other: "Histogram") -> None:
        exp, signed = max(self.exp, other.exp), self.signed or other.signed
        self._widen(exp, signed)
        theirs = Histogram(len(other.counts), other.bins)
        theirs.exp, theirs.signed, theirs.counts = other.exp, other.signed, other.counts
        theirs._widen(exp, signed)
        self.counts += theirs.counts

    def _grow(self, magnitude: float, signed: bool) -> None:
        """Widen until 2**exp > magnitude, and to [-hi, hi) when signed."""
        # frexp: the smallest e with 2**e > magnitude (but frexp(0) is 0: all zeros keep the smallest range)
        self._widen(max(math.frexp(magnitude)[1], MIN_EXP) if magnitude > 0 else MIN_EXP, signed)

    def _widen(self, need: int, signed: bool) -> None:
        half = self.bins // 2
        if signed and not self.signed:  # [0, hi) -> [-hi, hi): old pairs land in the upper half
            self.counts = np.concatenate([np.zeros_like(self.counts[:, :half]), self._pairs()], axis=1)
            self.signed = True
        while self.exp < need:  # [lo, hi) -> [2lo, 2hi): pairs of bins merge
            pairs = self._pairs()
            pad = np.zeros_like(self.counts[:, :half // 2 if self.signed else half])
            self.counts = np.concatenate([pad, pairs, pad] if self.signed else [pairs, pad], axis=1)
            self.exp += 1

    def _pairs(self) -> np.ndarray:
        return self.counts.reshape(len(self.counts), -1, 2).sum(axis=2)
