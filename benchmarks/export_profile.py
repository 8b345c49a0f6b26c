"""Where export time and memory go: seconds and peak RSS per stage for one Keras model.

    python -m benchmarks.export_profile ResNet50 --size 224     # a Keras Application, random weights
    python -m benchmarks.export_profile --model my_model.keras  # any trained model

Stages are the exporter's own (load, SavedModel, ONNX, verification); the peak RSS after a stage is
the process' peak so far, so the stage where it jumps is the one that needs the memory. The model
is built and saved in a child process, so building it does not count. --max-rss-gb stops a run
that would take the machine's memory, naming the stage it was in.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BUILD = """
import sys, keras
name, size, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3)).save(path)
"""


def build_application(name: str, size: int, folder: Path) -> Path:
    """keras.applications.<name>(weights=None) at size x size x 3, saved to folder (child process)."""
    path = folder / f"{name}_{size}.keras"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", BUILD, name, str(size), str(path)], check=True, env=env)
    return path


def watch_rss(limit_bytes: float, progress) -> None:
    """Exit the process (status 3) once its resident memory passes limit_bytes."""
    def run():
        import psutil

        me = psutil.Process()
        while True:
            rss = me.memory_info().rss
            if rss > limit_bytes:
                done = ", ".join(progress.seconds) or "none"
                print(f"STOPPED: RSS {rss / 1e9:.1f} GB > {limit_bytes / 1e9:g} GB after stages [{done}]",
                      file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.05)

    threading.Thread(target=run, daemon=True).start()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.export_profile", description=__doc__.splitlines()[0])
    p.add_argument("application", nargs="?", help="keras.applications name, e.g. ResNet50, VGG16, NASNetMobile")
    p.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--model", type=Path, help="a saved Keras model instead of an application")
    p.add_argument("--max-rss-gb", type=float, default=12.0, help="stop the run beyond this RSS (default 12)")
    p.add_argument("--json", type=Path, help="also append the result as one JSON line to this file")
    args = p.parse_args(argv)
    if not (args.application or args.model):
        p.error("name an application or pass --model")
    from runtime.backends.quiet_tf import import_tensorflow

    import_tensorflow()
    from export.pipeline import export_model
    from export.progress import Progress

    with tempfile.TemporaryDirectory(prefix="export_profile-") as tmp:
        model = args.model or build_application(args.application, args.size, Path(tmp))
        started = time.perf_counter()
        progress = Progress(sys.stderr)
        watch_rss(args.max_rss_gb * 1e9, progress)
        manifest = export_model(model, Path(tmp) / "artifacts", progress=progress)
        onnx_mb = (Path(tmp) / "artifacts" / "model.onnx").stat().st_size / 1e6
    v = manifest.verification
    worst = {key: max(r[key] for by in v["outputs"].values() for r in by.values()) for key in ("min_atol", "min_rtol")}
    result = {
        "model": args.application or str(args.model), "input": list(manifest.input.shape[1:]),
        "params": manifest.source_model["params"], "outputs": len(manifest.outputs), "onnx_mb": round(onnx_mb, 1),
        "stages": {s: {"seconds": round(t, 1), "peak_rss_gb": round(progress.peak_rss[s] / 1e9, 2)}
                   for s, t in progress.seconds.items()},
        "total_seconds": round(time.perf_counter() - started, 1), "verified_images": v["images"],
        "batch": v["batch"], "passed": v["passed"], "worst": worst,
    }
    print(f"{result['model']} {result['input']}: {result['params']:,} params, {result['outputs']} outputs, "
          f"ONNX {result['onnx_mb']} MB, verified on {v['images']} images in batches of {v['batch']}")
    print(f"{'stage':<14}{'seconds':>9}{'peak RSS GB':>13}")
    for stage, r in result["stages"].items():
        print(f"{stage:<14}{r['seconds']:>9.1f}{r['peak_rss_gb']:>13.2f}")
    print(f"{'total':<14}{result['total_seconds']:>9.1f}   (model build in a child process not counted)")
    print(f"passed: {v['passed']}; worst min_atol {worst['min_atol']:.2g}, min_rtol {worst['min_rtol']:.2g}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0 if v["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
