"""`runtime serve` on a hostile network: throughput with every protection on (wrk), and RSS and throughput under
the floods of issue 21 (slow headers, clients that never read, a queue flood, JSON bombs, a huge JSON response).

    python -m benchmarks.serve_hostile [--baseline SRC] [--artifacts DIR] [--seconds 10] [--rounds 3]

- throughput: `wrk -t1 -c32` (Debian's, one thread: on 2 cores the numbers are the server's, not the
  client's) posts one prebuilt binary request (1 or 8 images, every output binary) from a Lua script;
  rounds alternate this tree's server and, with --baseline, the one of another source tree (a
  `git archive` of the commit before the protections), then the in-process Model.stream at the batch
  size the server formed. Reported: images/s, the ratio to the baseline and to the stream.
- floods: against one server of this tree with the default settings, sampling its RSS every 20 ms, while
  one real client sends one-image requests on fresh connections (its images/s is the "throughput").
The floods are benchmarks/serve_floods.py. Results: benchmarks/results/serve_hostile.md (--out).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.serve_floods import MAX_BATCH, ROOT, Served, binary_request, floods

CONNECTIONS = 32
LUA = """local f = assert(io.open("{path}", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "{header}"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d\\n", summary.requests, summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout, latency:percentile(50),
    latency:percentile(99)))
end
"""


def wrk(server: Served, lua: Path, seconds: float, connections: int = CONNECTIONS) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(lua), server.url +
                          f"/v2/models/{server.name}/infer"], capture_output=True, text=True, check=True).stdout
    requests, errors, p50, p99 = map(int, re.search(r"RESULT (\d+) (\d+) (\d+) (\d+)", out).groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    return {"rps": rate, "errors": errors + (int(non2xx[1]) if non2xx else 0), "p50_ms": p50 / 1e3, "p99_ms": p99 / 1e3}


def stream_rate(model, images: np.ndarray, batch: int, seconds: float) -> float:
    data = np.resize(images, (max(batch * 8, len(images)), *images.shape[1:]))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for part in model.stream(data, batch_size=batch):
            done += len(part["dense_1"])
    return done / (time.perf_counter() - start)


def throughput(args, model, images: np.ndarray, folder: Path) -> list[dict]:
    servers = {"protected": Served(ROOT, args.artifacts)}
    if args.baseline:
        servers["baseline"] = Served(args.baseline, args.artifacts)
    rows = []
    try:
        for per_request, connections in ((1, CONNECTIONS), (8, CONNECTIONS), (1, 1)):
            body, header = binary_request(images[:per_request])
            (folder / f"req{per_request}.bin").write_bytes(body)
            lua = folder / f"post{per_request}.lua"
            lua.write_text(LUA.format(path=folder / f"req{per_request}.bin", header=header))
            for server in servers.values():
                wrk(server, lua, 1)  # warm-up
            runs: dict[str, list] = {k: [] for k in servers}
            for i in range(args.rounds):
                # ABBA: which server goes first alternates (an A/A run, the same tree twice, showed a 5-17% bias
                # for whichever came first), and the stream runs after both.
                for key in list(servers)[::-1 if i % 2 else 1]:
                    server = servers[key]
                    before, cpu = server.stats(), server.cpu_s()
                    result = wrk(server, lua, args.seconds, connections)
                    cpu, after = server.cpu_s() - cpu, server.stats()
                    batch = (after[0] - before[0]) / max(1, after[1] - before[1])
                    result["batch"], result["cpu_us"] = batch, 1e6 * cpu / max(1, after[0] - before[0])
                    runs[key].append(result)
                batch = runs["protected"][-1]["batch"]
                runs["protected"][-1]["stream"] = stream_rate(model, images, max(1, round(batch)), args.seconds / 2)
            rows.append({"per_request": per_request, "connections": connections, **runs})
    finally:
        for server in servers.values():
            server.stop()
    return rows


def report(args, rows: list[dict], found: list[tuple[str, str]]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name")), platform.processor())
    out = ["# `runtime serve` on a hostile network", "",
           f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu}, {os.cpu_count()} cores, "
           f"Python {platform.python_version()}; `python -m benchmarks.serve_hostile --seconds {args.seconds:g} "
           f"--rounds {args.rounds}`. Default settings (max batch {MAX_BATCH}).", "",
           "## Throughput: wrk -t1, one prebuilt binary request, every output binary", "",
           "| connections x images per request | protected: images/s (median of rounds) | baseline: images/s |"
           " protected / baseline |"
           " server CPU per image: protected / baseline |"
           " in-process stream at the formed batch | protected / stream (target >= 0.6x at 8) | formed batch |"
           " p50 / p99 latency | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        n = row["per_request"]
        p = row["protected"]
        ours = [r["rps"] * n for r in p]
        base = [r["rps"] * n for r in row.get("baseline", [])]
        ratios = [o / b for o, b in zip(ours, base)]
        streams = [o / r["stream"] for o, r in zip(ours, p)]
        cpu = [r["cpu_us"] for r in p]
        cpu_ratio = [a["cpu_us"] / b["cpu_us"] for a, b in zip(p, row.get("baseline", []))]
        out.append(f"| {row['connections']} x {n} | {statistics.median(ours):,.0f} "
                   f"({', '.join(f'{x:,.0f}' for x in ours)}) | "
                   + (f"{statistics.median(base):,.0f} ({', '.join(f'{x:,.0f}' for x in base)}) | "
                      f"**{statistics.median(ratios):.3f}x** ({', '.join(f'{x:.3f}' for x in ratios)}) | "
                      f"{statistics.median(cpu):.0f} / {statistics.median(r['cpu_us'] for r in row['baseline']):.0f} "
                      f"us: **{statistics.median(cpu_ratio):.3f}x** |"
                      if base else f"- | - | {statistics.median(cpu):.0f} us / - | ")
                   + f"{statistics.median(r['stream'] for r in p):,.0f} | **{statistics.median(streams):.2f}x** "
                   f"({', '.join(f'{x:.2f}' for x in streams)}) | {statistics.median(r['batch'] for r in p):.1f} | "
                   f"{statistics.median(r['p50_ms'] for r in p):.1f} / {statistics.median(r['p99_ms'] for r in p):.1f}"
                   f" ms | {sum(r['errors'] for r in p)} |")
    load = os.getloadavg()
    out += ["", "Rounds alternate the two servers (same machine, same minute); each ratio is per round, the median "
            "is bold. Server CPU per image (user + system, /proc) is the steadier measure where other work shares "
            "the cores; with one connection every batch is one image, so its CPU ratio is the protections' cost "
            f"per request alone (load average at the end: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}).", "",
            "## Floods (this tree, default settings)", "", "| flood | result |", "|---|---|"]
    out += [f"| {what} | {result} |" for what, result in found]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, help="artifacts folder (default: export the reference CNN)")
    parser.add_argument("--baseline", type=Path, help="source tree of the server to compare (a git archive)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-floods", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serve_hostile.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.artifacts is None:
            from export.pipeline import export_model
            from export.reference import REFERENCE_MODEL

            args.artifacts = Path(tmp) / "artifacts"
            export_model(REFERENCE_MODEL, args.artifacts)
        import runtime
        from runtime.data.mnist import shipped_digits
        from runtime.preprocess import to_batch

        with runtime.load(args.artifacts, threads=1) as model:  # as the server runs it
            images = to_batch(shipped_digits()[0][..., None], model.input_spec)
            rows = throughput(args, model, images, Path(tmp))
        found = [] if args.skip_floods else floods(args, images)
    text = report(args, rows, found)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
