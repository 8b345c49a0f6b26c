"""Comparing named outputs: the one helper that export verification, tests and users share.

The criterion. An output agrees with its reference when (1) both have NaN and +-Inf in the same
places, and (2) in every channel c (the last axis: a feature map's channel, a classifier's class),
max|a - b| <= atol * S + rtol * S_c, where S is the output's largest reference magnitude and S_c the
channel's, both over all compared images. float32 reordering noise scales with the layer: it stays
near 1e-6 * S even 100+ layers deep, so the atol * S floor absorbs it, also in channels that are
nearly dead, and rtol * S_c gives every live channel room for its own rounding. A real defect
moves some channel by a share of its own magnitude: one kernel channel scaled by 1% misses its
bound by ~10x, while a wrong layer, swapped outputs or a double-scaled input miss it by orders of
magnitude. Judging per channel keeps one bad channel among 2048 from hiding in a whole-output
maximum or a quantile. The report also gives, per output, max/mean/median/p99 absolute error and
elementwise relative error |a - b| / |b| (exact zeros of the reference left out: ReLU maps are
mostly zeros), the index of the worst element, NaN/Inf counts, the smallest atol (rtol = 0) and
rtol (atol = 0) that would pass, and argmax agreement for [batch, classes] outputs. Medians and
p99s come from a log histogram (within 12.5%); everything is accumulated batch by batch, so no
output is ever held whole.

The noise floor. Some models are chaotic: with random or degenerate weights (EfficientNetV2L with
untrained BatchNorm) a one-ulp change of the input moves the last layers by their whole range, so
no engine that sums in another order can agree with Keras element by element, however faithful the
conversion. When an output misses the bound above, export verification measures the output's own
float32 noise floor F: its largest change when every input value moves by one float32 ulp, Keras
against Keras. Errors up to noise * F are then accepted too, and the report marks each output that
passed only so. The floor is per output, so a real defect still fails where it happens unless
the model is already chaotic there: before chaos sets in F is 1e-7 to 1e-5 of an output's scale,
far below a 1% channel defect. The floor is measured only when needed (two more Keras passes);
a user who wants the plain bound alone sets noise = 0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from runtime.errors import InputError


@dataclass(frozen=True)
class Tolerance:
    """max|a - b| <= max(atol * S + rtol * S_c, noise * F) in every channel (S: the output's scale, S_c the
    channel's, F the output's noise floor where one was measured)."""

    atol: float = 1e-5
    rtol: float = 1e-3
    noise: float = 10.0


# float32 reordering noise between Keras, the SavedModel and ONNX, 100+ layers deep; also what an
# image must give alone and inside a batch on one backend.
DEFAULT_TOLERANCE = Tolerance()
# GPU vs CPU on one backend, float32 on both (the onnx backend turns the CUDA provider's TF32 off).
# Measured (benchmarks/results/gpu.md; NVIDIA H100 80GB HBM3, onnxruntime-gpu 1.31.1, cuDNN 9.19, 2000 real
# digits, 4 models up to a 20-conv ResNet): max |gpu - cpu| / max |cpu| <= 1.6e-6 per output, max abs 3.3e-6,
# argmax never differs. About 10x margin, for other GPUs and cuDNN algorithms.
GPU_TOLERANCE = Tolerance(atol=1e-5, rtol=1e-5)
# The same with TF32 on (cuda_options={"use_tf32": 1}; onnxruntime's own default): operands rounded to a
# 10-bit mantissa. Measured as above: up to 1.4e-3 of an output's scale (reference CNN's probabilities),
# 1.1e-3 inside the ResNet, and 3 of 2000 predicted classes flipped on a briefly trained model.
TF32_TOLERANCE = Tolerance(atol=1e-3, rtol=5e-3)

# Histogram bins: the top 11 bits of a non-negative float32 (exponent + 3 mantissa bits), so a bin
# spans 1/8 of an octave and a quantile read from it is within 12.5%.
_BIN_SHIFT = 20
_BINS = 1 << (31 - _BIN_SHIFT)


def _histogram(values: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.int32) >> _BIN_SHIFT
    return np.bincount(bits.ravel(), minlength=_BINS)


def _quantile(hist: np.ndarray, q: float) -> float:
    """Upper edge of the bin holding the q-quantile (0.0 when everything is an exact zero)."""
    total = int(hist.sum())
    if not total:
        return 0.0
    i = int(np.searchsorted(np.cumsum(hist), q * total, side="left"))
    if i == 0:  # exact zeros (and denormals)
        return 0.0
    return float(np.array((i + 1) << _BIN_SHIFT, dtype=np.int32).view(np.float32))


@dataclass
class Diff:
    """Error statistics of one output against its reference, accumulated batch by batch."""

    images: int = 0
    count: int = 0
    sum_abs: float = 0.0
    max_abs: float = 0.0
    worst_index: tuple = ()
    rel_count: int = 0
    sum_rel: float = 0.0
    max_rel: float = 0.0
    nan: int = 0  # NaN / +-Inf in the compared output
    inf: int = 0
    nonfinite_mismatch: int = 0  # elements finite in one and not (or another non-finite) in the other
    argmax_agree: int | None = None  # [batch, classes] outputs only
    noise_floor: float | None = None  # F, set by whoever measured it (export verification)
    channel_err: np.ndarray | None = field(default=None, repr=False)
    channel_ref: np.ndarray | None = field(default=None, repr=False)
    hist_abs: np.ndarray = field(default_factory=lambda: np.zeros(_BINS, np.int64), repr=False)
    hist_rel: np.ndarray = field(default_factory=lambda: np.zeros(_BINS, np.int64), repr=False)

    def update(self, actual: np.ndarray, reference: np.ndarray) -> None:
        """Add one batch (leading axis = images) of actual vs reference outputs."""
        actual, reference = np.asarray(actual, np.float32), np.asarray(reference, np.float32)
        if actual.shape != reference.shape:
            raise InputError(f"shapes differ: got {actual.shape}, reference {reference.shape}")
        offset, self.images = self.images, self.images + (actual.shape[0] if actual.ndim else 1)
        if actual.size == 0:
            return
        if actual.ndim == 2 and actual.shape[1] > 1:
            agree = int((actual.argmax(axis=1) == reference.argmax(axis=1)).sum())
            self.argmax_agree = (self.argmax_agree or 0) + agree
        err = np.abs(actual - reference)
        if not np.isfinite(err).all():
            err = self._nonfinite(actual, reference, err)
        absref = np.abs(reference)
        if not np.isfinite(absref).all():
            absref = np.where(np.isfinite(absref), absref, 0)
        channels = actual.shape[-1] if actual.ndim > 1 else 1
        per_err, per_ref = err.reshape(-1, channels).max(axis=0), absref.reshape(-1, channels).max(axis=0)
        if self.channel_err is None:
            self.channel_err, self.channel_ref = per_err, per_ref
        else:
            np.maximum(self.channel_err, per_err, out=self.channel_err)
            np.maximum(self.channel_ref, per_ref, out=self.channel_ref)
        worst = int(err.argmax())
        if err.flat[worst] > self.max_abs or not self.worst_index:
            self.max_abs = float(err.flat[worst])
            index = np.unravel_index(worst, err.shape) if err.ndim else (0,)
            self.worst_index = (offset + int(index[0]), *map(int, index[1:]))
        self.count += err.size
        self.sum_abs += float(err.sum(dtype=np.float64))
        self.hist_abs += _histogram(err)
        nonzero = absref > 0
        rel = err[nonzero] / absref[nonzero]
        if rel.size:
            self.rel_count += rel.size
            self.sum_rel += float(rel.sum(dtype=np.float64))
            self.max_rel = max(self.max_rel, float(rel.max()))
            self.hist_rel += _histogram(rel)

    def _nonfinite(self, actual: np.ndarray, reference: np.ndarray, err: np.ndarray) -> np.ndarray:
        """Count NaN/Inf; equal non-finite pairs count as no error, mismatches are set apart."""
        self.nan += int(np.isnan(actual).sum())
        self.inf += int(np.isinf(actual).sum())
        same = (actual == reference) | (np.isnan(actual) & np.isnan(reference))
        bad = ~np.isfinite(err) & ~same
        self.nonfinite_mismatch += int(bad.sum())
        return np.where(np.isfinite(err), err, 0).astype(np.float32)

    @property
    def scale(self) -> float:
        """S: the largest finite magnitude of the reference output."""
        return float(self.channel_ref.max()) if self.channel_ref is not None else 0.0

    max_ref = scale  # the name earlier reports and tables use

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.count if self.count else 0.0

    @property
    def mean_rel(self) -> float:
        return self.sum_rel / self.rel_count if self.rel_count else 0.0

    @property
    def min_atol(self) -> float:
        """The smallest atol that passes with rtol = 0: max|a - b| / S."""
        return _ratio(self.max_abs, self.scale)

    @property
    def min_rtol(self) -> float:
        """The smallest rtol that passes with atol = 0: the worst channel's max|a - b| / S_c."""
        if self.channel_err is None:
            return 0.0
        return max(_ratio(float(e), float(s)) for e, s in zip(self.channel_err, self.channel_ref))

    def excess(self, tol: Tolerance = DEFAULT_TOLERANCE, floor: bool = True) -> tuple[float, int]:
        """(worst channel's error / its bound, that channel); a ratio above 1 fails.

        floor=False leaves the noise floor out: the plain atol/rtol bound.
        """
        if self.channel_err is None:
            return 0.0, 0
        bound = tol.atol * self.scale + tol.rtol * self.channel_ref
        if floor and self.noise_floor:
            bound = np.maximum(bound, tol.noise * self.noise_floor)
        ratios = np.where(bound > 0, self.channel_err / np.where(bound > 0, bound, 1),
                          np.where(self.channel_err > 0, np.inf, 0.0))
        worst = int(ratios.argmax())
        return float(ratios[worst]), worst

    def ok(self, tol: Tolerance = DEFAULT_TOLERANCE, floor: bool = True) -> bool:
        return self.nonfinite_mismatch == 0 and self.excess(tol, floor)[0] <= 1.0

    def within_noise_only(self, tol: Tolerance = DEFAULT_TOLERANCE) -> bool:
        """Passes, but only thanks to its noise floor."""
        return self.ok(tol) and not self.ok(tol, floor=False)

    def report(self, tol: Tolerance = DEFAULT_TOLERANCE) -> dict:
        """The statistics as plain JSON values (for the manifest)."""
        out = {
            "max_abs": self.max_abs, "mean_abs": self.mean_abs,
            "median_abs": _quantile(self.hist_abs, 0.5), "p99_abs": _quantile(self.hist_abs, 0.99),
            "worst_index": list(self.worst_index),
            "max_rel": self.max_rel, "mean_rel": self.mean_rel,
            "median_rel": _quantile(self.hist_rel, 0.5), "p99_rel": _quantile(self.hist_rel, 0.99),
            "scale": self.scale, "min_atol": self.min_atol, "min_rtol": self.min_rtol,
            "nan": self.nan, "inf": self.inf, "nonfinite_mismatch": self.nonfinite_mismatch,
        }
        if self.argmax_agree is not None:
            out["argmax_agree"] = self.argmax_agree
        if self.noise_floor is not None:
            out["noise_floor"] = self.noise_floor
            out["within_noise_only"] = self.within_noise_only(tol)
        out["ok"] = self.ok(tol)
        return out

    def problem(self, tol: Tolerance = DEFAULT_TOLERANCE) -> str | None:
        """Why this output fails, in one line; None when it passes."""
        if self.nonfinite_mismatch:
            return f"{self.nonfinite_mismatch} NaN/Inf values where the reference has other values"
        ratio, c = self.excess(tol)
        if ratio <= 1.0:
            return None
        floor = f", nor {tol.noise:g}x its noise floor {self.noise_floor:.3g}" if self.noise_floor is not None else ""
        return (f"channel {c}: max abs error {float(self.channel_err[c]):.3g} > {tol.atol:g}*{self.scale:.3g} + "
                f"{tol.rtol:g}*{float(self.channel_ref[c]):.3g}{floor} (worst element at {list(self.worst_index)}; "
                f"would pass with atol {self.min_atol:.2g} or rtol {self.min_rtol:.2g})")


def _ratio(err: float, scale: float) -> float:
    if scale > 0:
        return err / scale
    return float("inf") if err > 0 else 0.0


def compare_outputs(actual: dict, reference: dict, diffs: dict[str, Diff] | None = None) -> dict[str, Diff]:
    """Accumulate per-output differences of actual vs reference (dicts keyed by output name).

    Returns the updated diffs; pass them back in to accumulate over batches.

    Raises:
        InputError: the two dicts do not name the same outputs, or shapes differ.
    """
    if set(actual) != set(reference):
        raise InputError(f"outputs differ: got {sorted(actual)}, reference has {sorted(reference)}")
    diffs = {} if diffs is None else diffs
    for name, ref in reference.items():
        diffs.setdefault(name, Diff()).update(actual[name], ref)
    return diffs


def failures(diffs: dict[str, Diff], tol: Tolerance = DEFAULT_TOLERANCE) -> list[str]:
    """One short description per output that disagrees beyond tol."""
    return [f"{name}: {p}" for name, d in diffs.items() if (p := d.problem(tol))]


def tolerance_dict(tol: Tolerance) -> dict:
    return asdict(tol)
