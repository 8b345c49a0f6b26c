"""The onnx backend on a real GPU: per-output GPU-vs-CPU differences (TF32 on and off) and images per second.

    python -m benchmarks.gpu export DIR                  # where TensorFlow is ([export]): artifacts to measure
    python -m benchmarks.gpu measure DIR [--json FILE]   # where the GPU is ([gpu]): prints markdown tables

`export` writes DIR/<model>/ for the reference CNN, the zoo models the consistency tests use (trained as
their fixtures train them) and a ResNet-style model; FEATUREMAPS_TEST_ARTIFACTS=DIR lets the GPU tests run
on them without TensorFlow. `measure` needs onnxruntime-gpu only. Real MNIST test digits come from
runtime.data.mnist (MNIST_NPZ, else the 64 shipped ones, repeated where a batch needs more).

Differences: relative to the largest |CPU output| of each output (as runtime/compare.py measures them).
Speed: median seconds per call after warm-up calls, images/s = batch / median; every output of the
reference CNN is returned, as numpy unless a row says the outputs stay on the GPU (IOBinding).
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from runtime.artifacts.atomic import atomic_write
from runtime.cli.args import ArgumentParser
from runtime.cli.process import run_cli
from runtime.jobs.pipeline import usable_cores

MODELS = ["reference", "functional_bn", "rgb_small", "resnet_style"]
BATCHES = [1, 32, 256, 4096]
COMPARE_IMAGES, COMPARE_BATCH = 2000, 250
MIN_SECONDS, MIN_CALLS, MAX_CALLS, WARMUP = 1.0, 5, 2000, 3
# The runtime's default is float32 (use_tf32=0); TF32 is onnxruntime's own default and an opt-in here.
TF32 = {"runtime default (use_tf32=0)": None, "use_tf32=1": {"use_tf32": 1}}


# --- export (TensorFlow side) ---------------------------------------------------------------------

def export_all(out: Path) -> None:
    """DIR/<model>/ artifacts of MODELS; zoo models trained briefly on the shipped digits, as tests do."""
    import tempfile

    from export.pipeline import export_model
    from export.reference import REFERENCE_MODEL
    from runtime.data.mnist import shipped_digits
    from tests.zoo import ZOO, resnet_style, train_briefly

    builders = {**ZOO, "resnet_style": resnet_style}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".models-") as tmp:  # trained .keras files, removed after
        for name in MODELS:
            if name == "reference":
                model_file = REFERENCE_MODEL
            else:
                model_file = Path(tmp) / f"{name}.keras"
                train_briefly(builders[name](), *shipped_digits()).save(model_file)
            export_model(model_file, out / name)
            print(f"exported {name} -> {out / name}")


# --- measure (GPU side) ---------------------------------------------------------------------------

def machine() -> dict:
    """The GPU (nvidia-smi), the CPU and the library versions the numbers depend on."""
    import onnxruntime as ort
    from onnxruntime.capi import build_and_package_info as build

    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        gpu = "unknown (no nvidia-smi)"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"gpu": gpu, "cpu": cpu, "cpu_cores": usable_cores(), "onnxruntime": ort.__version__,
            "cuda": f"CUDA {getattr(build, 'cuda_version', '?')} build", "python": platform.python_version(),
            "numpy": np.__version__,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def digits(n: int) -> tuple[np.ndarray, str]:
    from runtime.data.mnist import mnist_test_set

    x, _, source = mnist_test_set()
    return np.resize(x, (n, *x.shape[1:])), source  # repeats the shipped digits if too few


def model_images(manifest, x: np.ndarray) -> np.ndarray:
    from runtime.preprocess import to_batch
    from tests.zoo import digits_as

    shape = manifest.input.image_shape
    return to_batch(x, manifest.input) if shape == (28, 28, 1) else digits_as(shape, x)


def differences(folder: Path, x: np.ndarray) -> dict:
    """{setting: {output: diff report + max_ref, argmax_differs}} of the GPU against the CPU."""
    import runtime
    from runtime.compare import compare_outputs

    with runtime.load(folder, device="cpu") as cpu:
        images = model_images(cpu.manifest, x)
        reference = [cpu.run(images[i:i + COMPARE_BATCH]) for i in range(0, len(images), COMPARE_BATCH)]
        probabilities = next(o.name for o in cpu.manifest.outputs if o.role == "model_output")
    found = {}
    for setting, options in TF32.items():
        with runtime.load(folder, device="gpu", cuda_options=options) as gpu:
            diffs, differ = {}, 0
            for i, ref in zip(range(0, len(images), COMPARE_BATCH), reference):
                got = gpu.run(images[i:i + COMPARE_BATCH])
                compare_outputs(got, ref, diffs)
                differ += int((got[probabilities].argmax(1) != ref[probabilities].argmax(1)).sum())
        found[setting] = {"outputs": {n: {**d.report(), "max_ref": d.max_ref} for n, d in diffs.items()},
                          "argmax_differs": differ, "images": len(images)}
    return found


def timed(fn: Callable[[], object]) -> dict:
    for _ in range(WARMUP):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < MIN_CALLS or (time.perf_counter() - started < MIN_SECONDS and len(times) < MAX_CALLS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)), "calls": len(times)}


def approaches(folder: Path) -> dict[str, Callable[[np.ndarray], Callable[[], object]]]:
    """name -> (batch -> a call that computes every output of that batch)."""
    import onnxruntime as ort

    import runtime
    from runtime.backends.onnx import CUDA, CUDA_DEFAULTS, preload_cuda_libraries, session_options

    gpu = runtime.load(folder, device="gpu")
    gpu_tf32 = runtime.load(folder, device="gpu", cuda_options={"use_tf32": 1})
    cpu = runtime.load(folder, device="cpu")
    preload_cuda_libraries()
    session = ort.InferenceSession(str(folder / "model.onnx"), session_options(), providers=[(CUDA, CUDA_DEFAULTS)])
    assert session.get_providers()[0] == CUDA
    names = [o.name for o in session.get_outputs()]

    def bound(x: np.ndarray, input_on_gpu: bool) -> Callable[[], object]:
        binding = session.io_binding()
        if input_on_gpu:
            binding.bind_ortvalue_input("image", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        else:
            binding.bind_cpu_input("image", x)
        for name in names:
            binding.bind_output(name, "cuda")
        return lambda: session.run_with_iobinding(binding)

    return {
        "runtime, onnx backend, GPU (outputs to numpy)": lambda x: lambda: gpu.run(x),
        "runtime, onnx backend, GPU, use_tf32=1 (outputs to numpy)": lambda x: lambda: gpu_tf32.run(x),
        "bare onnxruntime session, CUDA (outputs to numpy)": lambda x: lambda: session.run(None, {"image": x}),
        "bare session, IOBinding: input from host, outputs kept on GPU": lambda x: bound(x, False),
        "bare session, IOBinding: input and outputs on GPU": lambda x: bound(x, True),
        f"runtime, onnx backend, CPU ({usable_cores()} cores, outputs to numpy)":
            lambda x: lambda: cpu.run(x),
    }


def speeds(folder: Path, x: np.ndarray) -> dict:
    """{approach: {batch: timing}} on the reference CNN."""
    from runtime import read_manifest

    images = model_images(read_manifest(folder, verify_files=False), x)
    found: dict[str, dict] = {}
    for name, make in approaches(folder).items():
        for batch in BATCHES:
            found.setdefault(name, {})[batch] = timed(make(np.ascontiguousarray(images[:batch])))
            print(f"  {name}, batch {batch}: {batch / found[name][batch]['median_s']:,.0f} images/s", flush=True)
    return found


# The two rows whose ratio is the device-to-host copy's share of a call.
KEEP = "bare session, IOBinding: input from host, outputs kept on GPU"
COPY = "bare onnxruntime session, CUDA (outputs to numpy)"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"GPU: {m['gpu']}; CPU: {m['cpu']}, {m['cpu_cores']} cores; onnxruntime-gpu {m['onnxruntime']} "
             f"({m['cuda']}); Python {m['python']}, numpy {m['numpy']}; measured {m['when']}.", "",
             "Images per second, reference CNN, every output (probabilities and both conv feature maps):", "",
             "| approach | " + " | ".join(f"batch {b}" for b in BATCHES) + " |",
             "|---|" + "---|" * len(BATCHES)]
    speed = result["speed"]
    for name, by_batch in speed.items():
        lines.append(f"| {name} | " + " | ".join(f"{int(b) / t['median_s']:,.0f}" for b, t in by_batch.items()) + " |")
    share = [f"batch {b}: {1 - speed[KEEP][b]['median_s'] / t['median_s']:.0%}" for b, t in speed[COPY].items()]
    lines += ["", "Share of a GPU call spent copying the feature maps to numpy (1 - outputs kept on GPU / outputs "
              "to numpy, bare session): " + ", ".join(share) + ".", "",
              f"GPU against CPU, per output: max |gpu - cpu| / max |cpu| (mean in brackets), over the first "
              f"{result['images']} MNIST test digits ({result['source']}), resized for other input shapes; "
              "TF32 is the CUDA provider's use_tf32:", "",
              "| model | output | " + " | ".join(TF32) + " |", "|---|---|" + "---|" * len(TF32)]
    for model, settings in result["differences"].items():
        for output in next(iter(settings.values()))["outputs"]:
            cells = [f"{s['outputs'][output]['max_rel']:.2g} ({s['outputs'][output]['mean_rel']:.1g})"
                     for s in settings.values()]
            lines.append(f"| {model} | {output} | " + " | ".join(cells) + " |")
        cells = [f"argmax differs on {s['argmax_differs']}" for s in settings.values()]
        lines.append(f"| {model} | predicted class | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure(folder: Path, json_out: Path | None) -> dict:
    from runtime.backends.onnx import OnnxRunner

    if reason := OnnxRunner.gpu_missing():
        from runtime.errors import DeviceError

        raise DeviceError(f"measure needs a GPU: {reason}")
    x, source = digits(max(COMPARE_IMAGES, max(BATCHES)))
    result = {"machine": machine(), "images": COMPARE_IMAGES, "source": source, "differences": {}}
    for model in MODELS:
        if (folder / model / "manifest.json").is_file():
            print(f"differences: {model}", flush=True)
            result["differences"][model] = differences(folder / model, x[:COMPARE_IMAGES])
    print("speed: reference", flush=True)
    result["speed"] = speeds(folder / "reference", x)
    if json_out:
        with atomic_write(json_out, "w") as f:
            json.dump(result, f, indent=1)
    print(markdown(result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("export", help="write DIR/<model>/ artifacts (needs TensorFlow)").add_argument("dir", type=Path)
    m = sub.add_parser("measure", help="GPU vs CPU differences and images/s (needs onnxruntime-gpu)")
    m.add_argument("dir", type=Path)
    m.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    if args.command == "export":
        export_all(args.dir)
    else:
        measure(args.dir, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
