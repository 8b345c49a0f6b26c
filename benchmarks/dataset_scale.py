"""Dataset scale: `run` to Zarr (float32 and float16) and `stats` (numpy and the stats graph) against in-process
Model.stream, and the user's obvious alternative (a Keras multi-output model's predict plus numpy reductions);
sizes, codecs, Ray; one run, ratios.

    python -m benchmarks.dataset_scale ARTIFACTS [--images 10000,60000] [--data mnist.npz] [--work DIR]
        [--keras MODEL.keras] [--ray] [--markdown FILE]

Each measured job runs in a fresh interpreter (so that its peak RSS is its own) and times itself
after start-up; the stream baseline is measured the same way in the same run. Images are the
MNIST test digits followed by the training digits, as one memory-mapped .npy. OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are unset in the measured jobs only (they slow numpy here: /work/shared/FACTS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CODECS = [("lz4", 9, "noshuffle"), ("lz4", 6, "noshuffle"), ("lz4", 5, "noshuffle"), ("lz4", 5, "shuffle"),
          ("zstd", 1, "noshuffle"), ("zstd", 1, "shuffle"), ("zstd", 1, "bitshuffle"), ("zstd", 3, "noshuffle")]


def keras_alternative(model_file: str, images: str, n: int) -> tuple[float, float]:
    """A Keras multi-output model of every Conv2D's output, predict_on_batch on 256 images, then numpy per-channel
    sums, sums of squares (float64), max, min and zero counts: what a user writes first. Returns its start time."""
    import keras

    started, cpu_started = time.perf_counter(), cpu_seconds()  # loading included, as `run` and `stats` load theirs
    model = keras.models.load_model(model_file)
    convs = [layer.output for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    multi = keras.Model(model.inputs, convs)
    x = np.load(images, mmap_mode="r")[:n]
    for i in range(0, n, 256):
        for maps in multi.predict_on_batch((x[i:i + 256, :, :, None] / np.float32(255)).astype(np.float32)):
            maps = np.asarray(maps).reshape(-1, maps.shape[-1])
            maps.sum(axis=0, dtype=np.float64), np.einsum("ij,ij->j", maps, maps, dtype=np.float64)
            maps.max(axis=0), maps.min(axis=0), np.count_nonzero(maps == 0, axis=0)
    return started, cpu_started


def job(kind: str, artifacts: str, images: str, out: str, n: int, keras_model: str = "") -> dict:
    """One measured job, in this (fresh) interpreter: returns seconds and peak RSS."""
    import runtime
    from runtime.cli.main import main

    cpu = cpu_seconds
    started, cpu_started = time.perf_counter(), cpu()
    if kind == "keras":
        started, cpu_started = keras_alternative(keras_model, images, n)
    elif kind == "stream":
        with runtime.load(artifacts) as model:
            for _ in model.stream(np.load(images, mmap_mode="r")[:n], batch_size=256):
                pass
    elif kind in ("run", "run_f16", "stats", "stats_graph", "ray_run"):
        command = "stats" if kind.startswith("stats") else "run"
        argv = ([command, artifacts, "--input", images, "--out", out, "--quiet"]
                + (["--ray"] if kind == "ray_run" else []) + (["--dtype", "float16"] if kind == "run_f16" else [])
                + (["--engine", "graph" if kind == "stats_graph" else "numpy"] if command == "stats" else []))
        if kind == "ray_run":
            import ray

            t = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            startup = time.perf_counter() - t
            started, cpu_started = time.perf_counter(), cpu()
        if main(argv) != 0:
            raise SystemExit(f"{kind} failed")
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "cpu_seconds": cpu() - cpu_started,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if kind == "ray_run":
        result["startup_seconds"] = startup
    return result


def measure(kind: str, artifacts: Path, images: Path, out: Path, n: int, keras_model: str = "") -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path.cwd())!r}); from benchmarks.dataset_scale import job; "
            f"print(json.dumps(job({kind!r}, {str(artifacts)!r}, {str(images)!r}, {str(out)!r}, {n}, "
            f"{keras_model!r})))")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode:
        raise SystemExit(f"{kind} job failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_one_image_ms(store: Path, n: int, tries: int = 20) -> float:
    """Median milliseconds to read every output of one random image from the store (page cache warm)."""
    import zarr

    arrays = [a for _, a in zarr.open_group(str(store), mode="r").arrays()]
    times = []
    for i in np.random.default_rng(0).integers(0, n, tries):
        t = time.perf_counter()
        for a in arrays:
            a[int(i)]
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cpu_seconds() -> float:
    """CPU time of every thread of this process: robust to other work on the machine, unlike wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def breakdown(artifacts: Path, x: np.ndarray) -> dict:
    """CPU us per image of each stage of `run` to Zarr, serially on a sample: compute (the model as `run`
    loads it, and restricted to one onnxruntime thread), Blosc compression (ZARR_CODEC, one thread, as
    the writer's pool calls it) and writing the compressed bytes (page cache)."""
    import numcodecs

    from runtime.jobs.engine import load_model
    from runtime.jobs.shards import SHUFFLES
    from runtime.jobs.store import ZARR_CODEC, chunk_rows

    numcodecs.blosc.use_threads = False  # as under zarr: one Blosc thread per call
    codec = numcodecs.Blosc(cname=ZARR_CODEC["cname"], clevel=ZARR_CODEC["clevel"],
                            shuffle=SHUFFLES[ZARR_CODEC["shuffle"]])
    result = {}
    for key, threads in (("compute_us", None), ("compute_1_thread_us", 1)):
        with load_model(artifacts, threads=threads) as model:
            next(model.stream(x[:256], batch_size=256))  # warm-up
            t = cpu_seconds()
            outs = list(model.stream(x, batch_size=256))
            result[key] = 1e6 * (cpu_seconds() - t) / len(x)
    rows = chunk_rows(256)
    chunks = [np.ascontiguousarray(o[n][i:i + rows]) for o in outs for n in o for i in range(0, len(o[n]), rows)]
    t = cpu_seconds()
    encoded = [codec.encode(c) for c in chunks]
    result["compress_us"] = 1e6 * (cpu_seconds() - t) / len(x)
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"fm_write_{os.getpid()}"
    folder.mkdir()
    try:
        t = cpu_seconds()
        for i, data in enumerate(encoded):
            (folder / str(i)).write_bytes(data)
        result["write_us"] = 1e6 * (cpu_seconds() - t) / len(x)
    finally:
        shutil.rmtree(folder)
    return result


def codec_table(artifacts: Path, x: np.ndarray) -> list[dict]:
    import numcodecs

    import runtime

    with runtime.load(artifacts) as model:
        outs = model.run(x)
    shuffles = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
                "bitshuffle": numcodecs.Blosc.BITSHUFFLE}
    raw = sum(a.nbytes for a in outs.values())
    rows = []
    for cname, level, shuffle in CODECS:
        codec = numcodecs.Blosc(cname=cname, clevel=level, shuffle=shuffles[shuffle])
        t = time.perf_counter()
        size = sum(len(codec.encode(np.ascontiguousarray(a[i:i + 32]))) for a in outs.values()
                   for i in range(0, len(a), 32))
        seconds = time.perf_counter() - t
        rows.append({"codec": f"blosc {cname} {level} {shuffle}", "ratio": size / raw, "mb_per_s": raw / seconds / 1e6})
    return rows


def main(argv=None) -> int:
    from runtime.jobs.pipeline import usable_cores

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifacts", type=Path)
    p.add_argument("--images", default="10000,60000", help="comma-separated image counts")
    p.add_argument("--data", type=Path, default=os.environ.get("MNIST_NPZ"), help="Keras mnist.npz")
    p.add_argument("--work", type=Path, default=Path("/tmp/featuremaps_dataset_scale"))
    p.add_argument("--keras", default="", help="the trained Keras model (default: the shipped reference CNN)")
    p.add_argument("--ray", action="store_true", help="also Ray on a local 2-CPU runtime (10,000 images)")
    p.add_argument("--markdown", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.images.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    with np.load(args.data) as f:
        x = np.concatenate([f["x_test"], f["x_train"]])[:max(counts)]
    images = args.work / "images.npy"
    np.save(images, x)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    lines = [f"# Dataset scale ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}, "
             f"{usable_cores()} CPUs usable, load average {os.getloadavg()[0]:.1f})", ""]
    keras_model = args.keras or str(Path(__file__).resolve().parents[1] / "export" / "data" / "mnist_cnn.keras")
    lines += ["| images | stream img/s | run->zarr float32 | size / raw | run->zarr float16 | size / raw | "
              "read one image | stats numpy | stats graph | Keras predict + numpy | stats peak RSS numpy, graph | "
              "CPU us/img: stream, run f32, run f16, stats numpy, stats graph, Keras |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    report = {"cpu": cpu, "rows": []}
    for n in counts:
        store, stats_dir = args.work / "acts.zarr", args.work / "stats"
        np.save(args.work / "input.npy", x[:n])
        jobs, sizes = {}, {}
        jobs["stream"] = measure("stream", args.artifacts, images, store, n)
        for kind in ("run", "run_f16"):
            jobs[kind] = measure(kind, args.artifacts, args.work / "input.npy", store, n)
            sizes[kind] = folder_bytes(store)
            if kind == "run":
                read_ms = read_one_image_ms(store, n)
            shutil.rmtree(store)
        for kind in ("stats", "stats_graph"):
            jobs[kind] = measure(kind, args.artifacts, args.work / "input.npy", stats_dir, n)
            shutil.rmtree(stats_dir)
        jobs["keras"] = measure("keras", args.artifacts, args.work / "input.npy", stats_dir, n, keras_model)
        raw = n * (26 * 26 * 32 + 11 * 11 * 64 + 10) * 4
        ips = {k: n / j["seconds"] for k, j in jobs.items()}
        row = {"images": n, "ips": ips, "ratio": {k: v / ips["stream"] for k, v in ips.items()},
               "size_ratio": {k: v / raw for k, v in sizes.items()}, "read_one_image_ms": read_ms,
               "peak_rss_mb": {k: j["peak_rss_mb"] for k, j in jobs.items()},
               "cpu_us": {k: 1e6 * j["cpu_seconds"] / n for k, j in jobs.items()}}
        report["rows"].append(row)
        r = row["ratio"]

        def cell(kind: str, ips=ips, r=r) -> str:
            return f"{ips[kind]:,.0f} ({r[kind]:.2f}x)"

        lines.append(f"| {n:,} | {ips['stream']:,.0f} | {cell('run')} | {row['size_ratio']['run']:.3f} | "
                     f"{cell('run_f16')} | {row['size_ratio']['run_f16']:.3f} | {read_ms:.1f} ms | {cell('stats')} | "
                     f"{cell('stats_graph')} | {cell('keras')} | {row['peak_rss_mb']['stats']:,.0f}, "
                     f"{row['peak_rss_mb']['stats_graph']:,.0f} MB | "
                     + ", ".join(f"{row['cpu_us'][k]:,.0f}" for k in ("stream", "run", "run_f16", "stats",
                                                                      "stats_graph", "keras")) + " |")
        print(lines[-1], flush=True)
    parts = breakdown(args.artifacts, x[:2048])
    report["breakdown"] = parts
    lines += ["", "CPU per image, serially on 2,048 images: compute {compute_us:.0f} us ({compute_1_thread_us:.0f} us "
                  "on one onnxruntime thread), Blosc compression {compress_us:.0f} us, write {write_us:.0f} us "
                  "(page cache).".format(**parts), "",
              "| codec (1,024 images, 32-image chunks) | size / raw | MB/s |", "|---|---|---|"]
    report["codecs"] = codec_table(args.artifacts, x[:1024])
    lines += [f"| {c['codec']} | {c['ratio']:.3f} | {c['mb_per_s']:,.0f} |" for c in report["codecs"]]
    if args.ray:
        n = min(10000, len(x))
        np.save(args.work / "input.npy", x[:n])
        local = measure("run", args.artifacts, args.work / "input.npy", args.work / "local.zarr", n)
        on_ray = measure("ray_run", args.artifacts, args.work / "input.npy", args.work / "ray.zarr", n)
        report["ray"] = {"images": n, "local_ips": n / local["seconds"], "ray_ips": n / on_ray["seconds"],
                         "startup_seconds": on_ray["startup_seconds"]}
        r = report["ray"]
        lines += ["", f"Ray, local runtime with 2 CPUs, run -> Zarr on {n:,} images: {r['ray_ips']:,.0f} img/s vs "
                      f"{r['local_ips']:,.0f} img/s locally ({r['local_ips'] / r['ray_ips']:.1f}x slower on Ray); "
                      f"ray.init {r['startup_seconds']:.1f} s before that."]
        for name in ("local.zarr", "ray.zarr"):
            shutil.rmtree(args.work / name, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    print(json.dumps(report))
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
