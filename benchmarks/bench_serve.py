"""The Open Inference Protocol server under load, against the in-process runtime; targets below.

- load: 32 concurrent tritonclient (asyncio) clients on loopback send binary tensors and fetch every output
  (binary) for a fixed time, in rounds; after each round, in-process Model.stream runs at the mean
  batch size the server formed in it. The median round's ratio of the two throughputs is reported,
  with errors, p50/p99 latency, the mean formed batch, CPU per image and the server's resident memory.
- single: one request of one image, all outputs, one client: p50 latency over the in-process
  Model.run p50, measured in alternating blocks.

With --benchmark-disable (CI) each runs briefly, once, so that it cannot rot.
Results go into extra_info; `python -m benchmarks.report` shows them (benchmarks/serve_report.py).
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from serving import Server  # tests/serving.py

import runtime

CLIENTS = 32
MAX_BATCH = 64
LOAD_SECONDS, LOAD_SECONDS_CI, LOAD_ROUNDS = 15.0, 1.0, 5  # odd: a true median round
SINGLE_BLOCKS, SINGLE_CALLS = 30, 20
# Targets: load throughput vs in-process stream, and one-request latency overhead.
THROUGHPUT_RATIO_MIN, OVERHEAD_MAX_S = 0.6, 1e-3


@pytest.fixture(scope="module")
def served(bench_artifacts):
    srv = Server(bench_artifacts, "--max-batch", str(MAX_BATCH))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def inprocess(bench_artifacts):
    with runtime.load(bench_artifacts) as model:
        yield model


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_stats(srv) -> dict:
    c = triton.InferenceServerClient(srv.host_port)
    try:
        return c.get_inference_statistics(srv.name)["model_stats"][0]
    finally:
        c.close()


def load_test(srv, images: np.ndarray, seconds: float, clients: int = CLIENTS, per_request: int = 1) -> dict:
    """`clients` concurrent tritonclient requests, `per_request` images each, until the time is up.

    The clients are tasks of one asyncio loop in a thread (tritonclient.http.aio, one connection
    each): they share the server's two cores, and 32 threads of the blocking client spent about
    twice the CPU per request that the loop does, CPU the server then did not get.
    """
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    memory: list[int] = []
    stop = threading.Event()

    async def client(c: triton_aio.InferenceServerClient, i: int) -> None:
        x = np.resize(images[i:], (per_request, *images.shape[1:]))
        inp = triton_aio.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        clock = time.perf_counter
        while not stop.is_set():
            start = clock()
            try:
                result = await c.infer(srv.name, [inp])  # no outputs named: all of them, binary
                arrays = [result.as_numpy(o["name"]) for o in result.get_response()["outputs"]]
                if len(arrays) != 3 or any(a is None or len(a) != per_request for a in arrays):
                    errors.append(f"bad response {result.get_response()}")
            except Exception as exc:
                errors.append(repr(exc))
                continue
            latencies[i].append(clock() - start)

    async def run_clients() -> None:
        c = triton_aio.InferenceServerClient(srv.host_port, conn_limit=clients, conn_timeout=60)
        try:
            await asyncio.gather(*(client(c, i) for i in range(clients)))
        finally:
            await c.close()

    def sample_memory() -> None:
        while not stop.wait(0.25):
            memory.append(rss_bytes(srv.proc.pid))

    before = server_stats(srv)
    cpu_server, cpu_client = cpu_seconds(srv.proc.pid), time.process_time()
    threads = [threading.Thread(target=asyncio.run, args=(run_clients(),)), threading.Thread(target=sample_memory)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.perf_counter() - started
    cpu_server, cpu_client = cpu_seconds(srv.proc.pid) - cpu_server, time.process_time() - cpu_client
    after = server_stats(srv)
    lat = np.concatenate([np.asarray(x) for x in latencies])
    executions = after["execution_count"] - before["execution_count"]
    inferences = after["inference_count"] - before["inference_count"]
    warm = memory[len(memory) // 4:] or memory  # after the first quarter: allocations have settled
    return {
        "clients": clients, "images_per_request": per_request, "seconds": elapsed, "requests": int(len(lat)),
        "errors": len(errors),
        "first_errors": errors[:3], "images_per_s": inferences / elapsed,
        "latencies": lat,
        "mean_batch": inferences / executions if executions else 0.0,
        "server_cpu_s_per_image": cpu_server / inferences if inferences else None,
        "client_cpu_s_per_image": cpu_client / inferences if inferences else None,
        "rss_start_bytes": warm[0] if warm else None, "rss_end_bytes": warm[-1] if warm else None,
        "rss_max_bytes": max(warm) if warm else None,
    }


def stream_rate(model: runtime.Model, images: np.ndarray, batch: int, seconds: float) -> tuple[float, float]:
    """(images per second, CPU seconds per image) of in-process Model.stream at this batch size, all outputs."""
    data = np.resize(images, (max(batch * 8, len(images)), *images.shape[1:]))
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for part in model.stream(data, batch_size=batch):
            done += len(part["dense_1"])
    return done / (time.perf_counter() - start), (time.process_time() - cpu) / done


@pytest.mark.parametrize("per_request", [1, 8])
def test_serve_load(benchmark, served, inprocess, bench_images, per_request):
    """Rounds of (load, then in-process stream at the batch size that round formed): other work on the
    cores drifts, so each round's ratio compares neighbours in time; the median round's ratio is reported."""
    seconds, n_rounds = (LOAD_SECONDS_CI, 1) if benchmark.disabled else (LOAD_SECONDS, LOAD_ROUNDS)
    load_test(served, bench_images, min(1.0, seconds), per_request=per_request)  # warm-up: connections, arenas
    rounds = []

    def measure():
        for _ in range(n_rounds):
            r = load_test(served, bench_images, seconds / n_rounds, per_request=per_request)
            r["inprocess_batch"] = max(1, round(r["mean_batch"]))
            r["inprocess_images_per_s"], r["inprocess_cpu_s_per_image"] = stream_rate(
                inprocess, bench_images, r["inprocess_batch"], seconds / n_rounds / 3)
            r["ratio"] = r["images_per_s"] / r["inprocess_images_per_s"]
            rounds.append(r)

    benchmark.group = "serve: load"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    median = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    latencies = np.concatenate([r.pop("latencies") for r in rounds])
    total_s = sum(r["seconds"] for r in rounds)
    result = {
        **{k: median[k] for k in ("ratio", "inprocess_batch", "inprocess_images_per_s", "inprocess_cpu_s_per_image")},
        "clients": CLIENTS, "images_per_request": per_request, "rounds": len(rounds), "seconds": total_s,
        "ratios": [round(r["ratio"], 3) for r in rounds],
        "requests": sum(r["requests"] for r in rounds), "errors": sum(r["errors"] for r in rounds),
        "first_errors": [e for r in rounds for e in r["first_errors"]][:3],
        "images_per_s": sum(r["images_per_s"] * r["seconds"] for r in rounds) / total_s,
        "mean_batch": float(np.mean([r["mean_batch"] for r in rounds])),
        "p50_s": float(np.percentile(latencies, 50)), "p99_s": float(np.percentile(latencies, 99)),
        "server_cpu_s_per_image": float(np.mean([r["server_cpu_s_per_image"] for r in rounds])),
        "client_cpu_s_per_image": float(np.mean([r["client_cpu_s_per_image"] for r in rounds])),
        # Memory after the first round (arenas and buffers grown for the batch sizes seen) to the end.
        "rss_start_bytes": rounds[min(1, len(rounds) - 1)]["rss_start_bytes"],
        "rss_end_bytes": rounds[-1]["rss_end_bytes"],
        "rss_max_bytes": max(r["rss_max_bytes"] or 0 for r in rounds),
        "load_average": round(os.getloadavg()[0], 1),  # other work sharing the cores
        "ratio_target": THROUGHPUT_RATIO_MIN,
    }
    benchmark.extra_info.update(kind="serve_load", **result)
    assert result["errors"] == 0, result["first_errors"]
    assert result["requests"] > 0 and result["mean_batch"] >= 1


def test_serve_single_request_overhead(benchmark, served, inprocess, bench_images):
    c = triton.InferenceServerClient(served.host_port)
    x = np.ascontiguousarray(bench_images[:1])
    inp = triton.InferInput("image", [1, 28, 28, 1], "FP32")
    inp.set_data_from_numpy(x)
    expected = inprocess.run(x)

    def served_call():
        result = c.infer(served.name, [inp])
        return {n: result.as_numpy(n) for n in expected}

    got = served_call()
    assert all(np.array_equal(got[n], expected[n]) for n in expected)  # bit for bit, all outputs
    variants = {"served": served_call, "inprocess": lambda: inprocess.run(x)}
    times = {name: [] for name in variants}
    blocks, calls = (2, 5) if benchmark.disabled else (SINGLE_BLOCKS, SINGLE_CALLS)
    clock = time.perf_counter

    def measure():
        for _ in range(blocks):
            for name, fn in variants.items():
                for _ in range(calls):
                    start = clock()
                    fn()
                    times[name].append(clock() - start)

    benchmark.group = "serve: one image"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    c.close()
    p50 = {name: float(np.median(t)) for name, t in times.items()}
    # The quietest block of each: what the code costs when the other work on the cores leaves it alone.
    best = {name: min(float(np.median(t[i:i + calls])) for i in range(0, len(t), calls)) for name, t in times.items()}
    benchmark.extra_info.update(
        kind="serve_single", load_average=round(os.getloadavg()[0], 1), calls=len(times["served"]),
        served_p50_s=p50["served"], served_p99_s=float(np.percentile(times["served"], 99)),
        inprocess_p50_s=p50["inprocess"], overhead_s=p50["served"] - p50["inprocess"],
        overhead_best_block_s=best["served"] - best["inprocess"], overhead_target_s=OVERHEAD_MAX_S)
