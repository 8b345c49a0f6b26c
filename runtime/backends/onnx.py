"""onnxruntime backend: model.onnx on the CPU or the CUDA execution provider."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.artifacts.hashing import read_verified
from runtime.artifacts.manifest import INPUT_NAME, ONNX_FILE, Manifest, listed_files
from runtime.errors import ArtifactError, BackendError, DeviceError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# float32 convolutions and matmuls, not TF32 (onnxruntime's default on Ampere and later): measured on an H100,
# GPU outputs then match the CPU's to ~1e-6 instead of ~1e-3 of their scale, at no measurable cost in speed
# for the reference CNN (benchmarks/results/gpu.md). cuda_options={"use_tf32": 1} opts in.
CUDA_DEFAULTS = {"use_tf32": 0}
_EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"
GPU_FIX = ("to use a GPU, install `featuremaps[gpu]` (onnxruntime-gpu) in place of `featuremaps[onnx]`, an NVIDIA "
           "driver (`nvidia-smi` must list the GPU) and the CUDA and cuDNN libraries that onnxruntime-gpu "
           "was built for (`pip install \"onnxruntime-gpu[cuda,cudnn]\"` brings them)")


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


@functools.cache
def preload_cuda_libraries() -> None:
    """Load pip-installed CUDA and cuDNN (the nvidia-* packages), which the loader does not search.

    Harmless where they come with the system; onnxruntime-gpu before 1.21 lacks preload_dlls.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        preload()


def _loads_on_cpu(graph: bytes, opts: ort.SessionOptions) -> bool:
    """Whether the graph itself is sound: tells a CUDA start failure from an unreadable model."""
    try:
        ort.InferenceSession(graph, opts, providers=[CPU])
    except Exception:
        return False
    return True


class OnnxRunner:
    name = "onnx"
    files = (ONNX_FILE,)  # what it loads, besides the external data that manifest.onnx["external_data"] lists

    def __init__(self, folder: Path, manifest: Manifest, device: str, threads: int | None = None,
                 optimization: str = "all", session_options: ort.SessionOptions | None = None,
                 cuda_options: dict | None = None, derive=None):
        """derive: a function of the verified graph's bytes giving the graph to load instead (e.g. the stats
        graph of runtime.jobs.stats_graph: more outputs, the manifest's still among them)."""
        path = Path(folder) / ONNX_FILE
        if session_options is not None and (threads is not None or optimization != "all"):
            raise BackendError("pass either session_options or threads/optimization, not both: "
                               "set them on your SessionOptions")
        if cuda_options is not None and not isinstance(cuda_options, dict):
            raise BackendError(f"cuda_options must be a dict of {CUDA} options, e.g. {{'use_tf32': 0}}; "
                               f"got {cuda_options!r}")
        # onnxruntime gets the bytes that were hashed, never a path it would open again later.
        external = manifest.onnx.get("external_data", [])
        listed_files(manifest, Path(folder), only=[ONNX_FILE])
        graph = read_verified(Path(folder), ONNX_FILE, manifest.files[ONNX_FILE])
        data = [read_verified(Path(folder), rel, manifest.files[rel]) for rel in external]
        if derive is not None:
            graph = derive(graph)
        opts = session_options or globals()["session_options"](threads, optimization)
        if device == "gpu":
            if reason := self.gpu_missing():
                raise DeviceError(f"device 'gpu' asked for, but {reason}")
            preload_cuda_libraries()
            wanted = [(CUDA, {**CUDA_DEFAULTS, **(cuda_options or {})}), CPU]
        else:
            wanted = [CPU]
        if external:
            opts.add_external_initializers_from_files_in_memory(external, data, [len(b) for b in data])
        with tempfile.TemporaryDirectory(prefix="featuremaps-onnx-") as empty:
            # A graph loaded from bytes reads external data it is not given from the working
            # folder; an empty folder instead makes any unlisted reference an error.
            opts.add_session_config_entry(_EXTERNAL_FOLDER, empty)
            try:
                # enable_fallback=0: a CUDA provider that fails to start raises (with onnxruntime's reason)
                # instead of being replaced by the CPU with a message on stdout.
                self.session = ort.InferenceSession(graph, opts, providers=wanted, enable_fallback=0)
            except Exception as exc:  # onnxruntime raises its own untyped errors
                reason = str(exc).splitlines()[0]
                if device == "gpu" and _loads_on_cpu(graph, opts):
                    raise DeviceError(f"device 'gpu' asked for, but onnxruntime could not start {CUDA}: {reason}; "
                                      f"{GPU_FIX}") from None
                if "xternal data" in reason:
                    reason += " (external data must be listed in the manifest's onnx.external_data)"
                raise ArtifactError(f"onnxruntime cannot load {path}: {reason}") from None
        del graph, data  # onnxruntime holds its own copy
        self.providers = self.session.get_providers()
        # Never serve a 'gpu' session that onnxruntime quietly moved to the CPU.
        if device == "gpu" and self.providers[0] != CUDA:
            raise DeviceError(f"device 'gpu' asked for, but onnxruntime took {self.providers}; {GPU_FIX}")
        self.device = device
        names = [o.name for o in self.session.get_outputs()]
        if ([i.name for i in self.session.get_inputs()] != [INPUT_NAME]
                or not (set(names) >= set(manifest.output_names) if derive else
                        sorted(names) == sorted(manifest.output_names))):
            raise ArtifactError(f"{path} has outputs {names}, the manifest lists {manifest.output_names}")

    @staticmethod
    def gpu_missing() -> str | None:
        available = ort.get_available_providers()
        if CUDA in available:
            return None
        return (f"the installed onnxruntime {ort.__version__} is a build without {CUDA} (available providers: "
                f"{available}); {GPU_FIX}")

    @classmethod
    def devices(cls) -> list[str]:
        return ["cpu"] if cls.gpu_missing() else ["cpu", "gpu"]

    def run(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        # onnxruntime executes the whole graph whatever is fetched (onnxruntime#16483);
        # only the fetched outputs are copied out.
        return dict(zip(names, self.session.run(names, {INPUT_NAME: batch})))

    def close(self) -> None:
        self.session = None
