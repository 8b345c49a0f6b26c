"""Comparing named outputs: the one helper that export verification, tests and users share."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Tolerance:
    """An output agrees when max|a - b| <= atol + rtol * max|reference|.

    Relative error is measured against the largest magnitude of the reference output,
    not element by element: ReLU maps are mostly exact zeros, where per-element ratios
    are meaningless.
    """

    atol: float = 1e-4
    rtol: float = 1e-4


# float32 rounding-level agreement between Keras, the SavedModel and ONNX; also what an image
# must give alone and inside a batch on one backend (measured: below 1e-6 on CPU).
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


@dataclass
class Diff:
    """Running error statistics of one output, accumulated batch by batch."""

    max_abs: float = 0.0
    sum_abs: float = 0.0
    max_ref: float = 0.0
    count: int = 0

    def update(self, actual: np.ndarray, reference: np.ndarray) -> None:
        if actual.shape != reference.shape:
            raise InputError(f"shapes differ: got {actual.shape}, reference {reference.shape}")
        if actual.size == 0:
            return
        err = np.abs(actual.astype(np.float64) - reference)
        self.max_abs = max(self.max_abs, float(err.max()))
        self.sum_abs += float(err.sum())
        self.max_ref = max(self.max_ref, float(np.abs(reference).max()))
        self.count += err.size

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.count if self.count else 0.0

    @property
    def max_rel(self) -> float:
        return self.max_abs / self.max_ref if self.max_ref else self.max_abs

    @property
    def mean_rel(self) -> float:
        return self.mean_abs / self.max_ref if self.max_ref else self.mean_abs

    def ok(self, tol: Tolerance = DEFAULT_TOLERANCE) -> bool:
        return self.max_abs <= tol.atol + tol.rtol * self.max_ref

    def report(self, tol: Tolerance = DEFAULT_TOLERANCE) -> dict:
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "max_rel": self.max_rel,
            "mean_rel": self.mean_rel,
            "ok": self.ok(tol),
        }


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
        diffs.setdefault(name, Diff()).update(np.asarray(actual[name]), np.asarray(ref))
    return diffs


def failures(diffs: dict[str, Diff], tol: Tolerance = DEFAULT_TOLERANCE) -> list[str]:
    """One short description per output that disagrees beyond tol."""
    return [
        f"{name}: max abs error {d.max_abs:.3g} > {tol.atol:g} + {tol.rtol:g}*{d.max_ref:.3g}"
        for name, d in diffs.items()
        if not d.ok(tol)
    ]


def tolerance_dict(tol: Tolerance) -> dict:
    return asdict(tol)
