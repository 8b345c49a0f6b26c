"""Dataset scale: `run` to Zarr and `stats` against in-process Model.stream, sizes, codecs, Ray; one run, ratios.

    python -m benchmarks.dataset_scale ARTIFACTS [--images 10000,60000] [--data mnist.npz] [--work DIR]
        [--ray] [--markdown FILE]

Each measured job runs in a fresh interpreter (so that its peak RSS is its own) and times itself
after start-up; the stream baseline is measured the same way in the same run. Images are the
MNIST test digits followed by the training digits, as one memory-mapped .npy.
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


def job(kind: str, artifacts: str, images: str, out: str, n: int) -> dict:
    """One measured job, in this (fresh) interpreter: returns seconds and peak RSS."""
    import runtime
    from runtime.cli.main import main

    cpu = cpu_seconds
    started, cpu_started = time.perf_counter(), cpu()
    if kind == "stream":
        with runtime.load(artifacts) as model:
            for _ in model.stream(np.load(images, mmap_mode="r")[:n], batch_size=256):
                pass
    elif kind in ("run", "stats", "ray_run"):
        command = "stats" if kind == "stats" else "run"
        argv = ([command, artifacts, "--input", images, "--out", out, "--quiet"]
                + (["--ray"] if kind == "ray_run" else []))
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


def measure(kind: str, artifacts: Path, images: Path, out: Path, n: int) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path.cwd())!r}); from benchmarks.dataset_scale import job; "
            f"print(json.dumps(job({kind!r}, {str(artifacts)!r}, {str(images)!r}, {str(out)!r}, {n})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
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
    lines += ["| images | stream img/s | run->zarr img/s | ratio | size / raw float32 | read one image | stats img/s | "
              "ratio | stats peak RSS | CPU us/img: stream, run, stats |", "|---|---|---|---|---|---|---|---|---|---|"]
    report = {"cpu": cpu, "rows": []}
    for n in counts:
        store, stats_dir = args.work / "acts.zarr", args.work / "stats"
        np.save(args.work / "input.npy", x[:n])
        stream = measure("stream", args.artifacts, images, store, n)
        run = measure("run", args.artifacts, args.work / "input.npy", store, n)
        size = folder_bytes(store)
        read_ms = read_one_image_ms(store, n)
        shutil.rmtree(store)
        stats = measure("stats", args.artifacts, args.work / "input.npy", stats_dir, n)
        shutil.rmtree(stats_dir)
        raw = n * (26 * 26 * 32 + 11 * 11 * 64 + 10) * 4
        row = {"images": n, "stream_ips": n / stream["seconds"], "run_ips": n / run["seconds"],
               "size_ratio": size / raw, "stats_ips": n / stats["seconds"], "stats_rss_mb": stats["peak_rss_mb"],
               "run_rss_mb": run["peak_rss_mb"], "read_one_image_ms": read_ms,
               "cpu_us": {k: 1e6 * j["cpu_seconds"] / n
                          for k, j in (("stream", stream), ("run", run), ("stats", stats))}}
        report["rows"].append(row)
        lines.append(f"| {n:,} | {row['stream_ips']:,.0f} | {row['run_ips']:,.0f} | "
                     f"{row['run_ips'] / row['stream_ips']:.2f}x | {row['size_ratio']:.3f} ({size / 1e9:.2f} GB) | "
                     f"{read_ms:.1f} ms | "
                     f"{row['stats_ips']:,.0f} | {row['stats_ips'] / row['stream_ips']:.2f}x | "
                     f"{row['stats_rss_mb']:,.0f} MB | "
                     + ", ".join(f"{v:,.0f}" for v in row["cpu_us"].values()) + " |")
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
