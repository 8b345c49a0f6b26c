"""Keras Applications coverage: export every family with default options and tabulate the result.

Each family is built with random weights (no downloads) at a small input size it accepts, once with
include_top=True and once with include_top=False inside a transfer-learning model
(Sequential[Input, base, GlobalAveragePooling2D, Dense]). Building and exporting run in their own
subprocesses, so the peak RSS reported is the export's alone (os.wait4 gives each child's rusage).

    python benchmarks/applications.py                 # every family (hours on 2 cores)
    python benchmarks/applications.py --quick         # a representative subset
    python benchmarks/applications.py --only ResNet50,EfficientNetB0 --variants transfer

Writes benchmarks/results/applications.md (and prints it as it goes).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "applications.md"

# Family -> smallest comfortable square input it accepts (Xception and the Inceptions need >= 71/75).
# Every family of keras.applications in Keras 3.15, which has no RegNet (that was tf.keras 2.x only).
FAMILIES = {
    "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Small": 32, "MobileNetV3Large": 32,
    "EfficientNetB0": 32, "EfficientNetV2B0": 32, "ResNet50": 32, "ResNet50V2": 32, "DenseNet121": 32,
    "NASNetMobile": 32, "InceptionV3": 75, "Xception": 71, "VGG16": 32, "VGG19": 32,
    "EfficientNetB1": 32, "EfficientNetB2": 32, "EfficientNetB3": 32, "EfficientNetV2B1": 32,
    "EfficientNetV2B2": 32, "EfficientNetV2B3": 32, "DenseNet169": 32, "DenseNet201": 32,
    "ResNet101": 32, "ResNet101V2": 32, "ResNet152": 32, "ResNet152V2": 32, "InceptionResNetV2": 75,
    "ConvNeXtTiny": 32, "EfficientNetB4": 32, "EfficientNetV2S": 32, "ConvNeXtSmall": 32, "EfficientNetB5": 32,
    "EfficientNetB6": 32, "EfficientNetV2M": 32, "EfficientNetB7": 32, "ConvNeXtBase": 32, "NASNetLarge": 32,
    "EfficientNetV2L": 32, "ConvNeXtLarge": 32, "ConvNeXtXLarge": 32,
}
QUICK = ["MobileNetV2", "EfficientNetB0", "ResNet50", "InceptionV3", "ConvNeXtTiny"]
VARIANTS = ("top", "transfer")
MAX_PARAMS = 400_000_000  # ConvNeXtXLarge (350 M) is the largest family; beyond, a 24 GB machine is tight
COLUMNS = ["family", "variant", "params", "input", "export s", "peak RSS", "ONNX MB", "outputs", "worst abs err",
           "within noise floor", "result"]


def build(family: str, variant: str, size: int, path: Path) -> int:
    """Save the model as .keras at path; return its parameter count."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    cls = getattr(keras.applications, family)
    shape = (size, size, 3)
    if variant == "top":
        model = cls(weights=None, input_shape=shape, include_top=True)
    else:
        base = cls(weights=None, input_shape=shape, include_top=False)
        model = keras.Sequential([keras.Input(shape), base, layers.GlobalAveragePooling2D(name="gap"),
                                  layers.Dense(5, activation="softmax", name="head")],
                                 name=f"{family.lower()}_transfer")
    model.save(path)
    return int(model.count_params())


def run_one(family: str, variant: str, size: int, work: Path, timeout: float) -> dict:
    row = {"family": family, "variant": variant, "input": f"{size}x{size}x3"}
    model = work / f"{family}_{variant}.keras"
    made = subprocess.run([sys.executable, __file__, "--build", family, "--variants", variant, "--size", str(size),
                           "--to", str(model)], capture_output=True, text=True, cwd=ROOT)
    if made.returncode:
        return {**row, "result": f"build failed: {_last_line(made.stderr)}"}
    params = int(made.stdout.strip().splitlines()[-1])
    row["params"] = f"{params / 1e6:.1f} M"
    if params > MAX_PARAMS:
        return {**row, "result": f"skipped: over {MAX_PARAMS / 1e6:.0f} M params, does not fit this shared machine"}
    out = work / f"{family}_{variant}_artifacts"
    code, seconds, rss, stderr = _measured([sys.executable, "-m", "export", "--model", str(model), "--out", str(out),
                                           "--force"], timeout)
    row.update({"export s": f"{seconds:.0f}", "peak RSS": f"{rss / 2**30:.2f} GB"})
    if code is None:
        return {**row, "result": f"timeout after {timeout:.0f} s"}
    if code:
        return {**row, "result": f"FAIL: {_last_line(stderr)}"}
    from runtime.artifacts.manifest import ONNX_FILE, belongs_to

    manifest = json.loads((out / "manifest.json").read_text())
    verification = manifest["verification"]
    onnx_bytes = sum(f["bytes"] for rel, f in manifest["files"].items() if belongs_to(rel, ONNX_FILE))
    worst = max(_numbers(verification["outputs"], "max_abs"), default=float("nan"))
    row.update({"ONNX MB": f"{onnx_bytes / 1e6:.1f}", "outputs": str(len(manifest["outputs"])),
                "worst abs err": f"{worst:.1e}",
                # outputs that agree only within their own float32 noise floor (a chaotic model: runtime/compare.py)
                "within noise floor": str(len(verification.get("within_noise_only", []))),
                "result": "pass" if verification["passed"] else "FAIL: " + "; ".join(verification["problems"])[:200]})
    shutil.rmtree(out, ignore_errors=True)
    model.unlink(missing_ok=True)
    return row


def _measured(command: list[str], timeout: float):
    """Run command; return (exit code or None on timeout, seconds, its own peak RSS in bytes, stderr).

    os.wait4 gives this child's rusage alone (RUSAGE_CHILDREN would be the maximum over all children).
    """
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        timed_out = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG if not timed_out else 0)
                if pid:
                    break
                if time.perf_counter() - started > timeout:
                    proc.terminate()  # SIGTERM: the exporter removes its temporary folder
                    timed_out = True
                time.sleep(0.5)
        except BaseException:  # Ctrl-C or SIGTERM here: the export in flight cleans up too
            proc.terminate()
            proc.wait()
            raise
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        err.seek(0)
        code = None if timed_out else proc.returncode
        return code, seconds, usage.ru_maxrss * 1024, err.read()  # ru_maxrss is in KiB on Linux


def _numbers(tree, key: str):
    """Every number stored under key at any depth of a JSON tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key and isinstance(v, (int, float)):
                yield float(v)
            else:
                yield from _numbers(v, key)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v, key)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no message")[:300].replace("|", "/")


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated families (default: all)")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help="top, transfer or both (default)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per export (default 1800)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"markdown table (default {RESULTS.relative_to(ROOT)})")
    p.add_argument("--build", help=argparse.SUPPRESS)  # internal: build one model in this subprocess
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--to", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.build:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        print(build(args.build, args.variants, args.size, args.to))
        return 0
    families = QUICK if args.quick else (args.only.split(",") if args.only else list(FAMILIES))
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    variants = args.variants.split(",")
    rows = []
    header = (f"Keras Applications export coverage: random weights, default options; export s is the wall time of "
              f"`python -m export` (TF start-up included), peak RSS its own; measured on {cpu_name()} "
              f"(2 cores shared with other work), {time.strftime('%Y-%m-%d')}.\n\n")
    with tempfile.TemporaryDirectory(prefix="applications-") as work:
        for family in families:
            for variant in variants:
                rows.append(run_one(family, variant, FAMILIES[family], Path(work), args.timeout))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(header + table(rows) + "\n")
    print(header + table(rows))
    return 0 if all(r["result"] == "pass" or r["result"].startswith("skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from runtime.cli.process import terminate_as_interrupt

    with terminate_as_interrupt():  # SIGTERM cleans up (the work folder, the export in flight) like Ctrl-C
        sys.exit(main())
