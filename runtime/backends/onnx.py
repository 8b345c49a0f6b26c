"""onnxruntime backend: model.onnx on the CPU or the CUDA execution provider."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import ArtifactError, BackendError, DeviceError
from ..manifest import INPUT_NAME, ONNX_FILE, Manifest

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def session_options(threads: int | None = None, optimization: str = "all") -> ort.SessionOptions:
    """Options suited to small CNNs: full graph optimisation, sequential execution.

    Args:
        threads: intra-op threads; None lets onnxruntime use one per physical core.
        optimization: "disable", "basic", "extended" or "all".

    Raises:
        BackendError: an unknown optimization level.
    """
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise BackendError(f"unknown onnxruntime optimization {optimization!r}; expected one of {list(levels)}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[optimization]
    # Small conv nets have no parallel branches: inter-op threads only add wake-ups.
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return opts


class OnnxRunner:
    name = "onnx"
    files = (ONNX_FILE,)  # what it loads: the only artifacts whose sha256 must be checked

    def __init__(self, folder: Path, manifest: Manifest, device: str, threads: int | None = None,
                 optimization: str = "all", session_options: ort.SessionOptions | None = None):
        path = Path(folder) / ONNX_FILE
        if session_options is not None and (threads is not None or optimization != "all"):
            raise BackendError("pass either session_options or threads/optimization, not both: "
                               "set them on your SessionOptions")
        opts = session_options or globals()["session_options"](threads, optimization)
        wanted = [CUDA, CPU] if device == "gpu" else [CPU]
        try:
            self.session = ort.InferenceSession(os.fspath(path), opts, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable graphs
            raise ArtifactError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None
        self.providers = self.session.get_providers()
        # onnxruntime falls back to CPU silently when CUDA cannot start: check what it took.
        if device == "gpu" and self.providers[0] != CUDA:
            raise DeviceError(
                f"device 'gpu' asked for, but onnxruntime could not start {CUDA} and took {self.providers}; "
                f"available providers: {ort.get_available_providers()}"
            )
        self.device = device
        names = [o.name for o in self.session.get_outputs()]
        if [i.name for i in self.session.get_inputs()] != [INPUT_NAME] or set(names) != set(manifest.output_names):
            raise ArtifactError(f"{path} has outputs {names}, the manifest lists {manifest.output_names}")

    @staticmethod
    def gpu_missing() -> str | None:
        available = ort.get_available_providers()
        return None if CUDA in available else f"onnxruntime has no {CUDA} (providers: {available})"

    @classmethod
    def devices(cls) -> list[str]:
        return ["cpu"] if cls.gpu_missing() else ["cpu", "gpu"]

    def run(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        # onnxruntime executes the whole graph whatever is fetched (onnxruntime#16483);
        # only the fetched outputs are copied out.
        return dict(zip(names, self.session.run(names, {INPUT_NAME: batch})))

    def close(self) -> None:
        self.session = None
