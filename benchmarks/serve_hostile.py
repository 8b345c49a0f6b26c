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
Results: benchmarks/results/serve_hostile.md (--out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONNECTIONS, MAX_BATCH = int(os.environ.get("WRK_C", 32)), 64
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


class Served:
    """`python -m runtime serve` from source tree `src` on a free port; stderr kept in a file."""

    def __init__(self, src: Path, artifacts: Path, *args: str, nofile: int | None = None):
        self.err = tempfile.TemporaryFile("w+")
        env = {**os.environ, "PYTHONPATH": str(src)}

        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen([sys.executable, "-m", "runtime", "serve", str(artifacts), "--port", "0",
                                      "--max-batch", str(MAX_BATCH), *args], cwd=src, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=self.err, preexec_fn=limit)
        banner = self.proc.stdout.readline()
        match = re.search(r"at http://(127\.0\.0\.1):(\d+)/v2/models/(\S+)", banner)
        if not match:
            self.proc.kill()
            raise SystemExit(f"server did not start: {banner!r} {self.stderr()[-2000:]}")
        self.host, self.port, self.name = match[1], int(match[2]), match[3]
        self.url = f"http://{self.host}:{self.port}"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self) -> tuple[int, int]:
        status, body = request(self, "GET", f"/v2/models/{self.name}/stats")
        s = json.loads(body)["model_stats"][0]
        return s["inference_count"], s["execution_count"]

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def binary_request(images: np.ndarray, json_outputs: bool = False) -> tuple[bytes, int]:
    """(body, header length) of an infer request with the images as binary FP32 (or UINT8) data."""
    datatype = "FP32" if images.dtype == np.float32 else "UINT8"
    header = json.dumps({"inputs": [{"name": "image", "datatype": datatype, "shape": list(images.shape),
                                     "parameters": {"binary_data_size": images.nbytes}}],
                         "parameters": {"binary_data_output": not json_outputs}}).encode()
    return header + images.tobytes(), len(header)


def raw(server: Served, body: bytes, header: int, path: str | None = None) -> bytes:
    path = path or f"/v2/models/{server.name}/infer"
    return (f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nContent-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: {header}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def request(server: Served, method: str, path: str, body: bytes = b"", headers: dict | None = None,
            timeout: float = 30) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body)."""
    import http.client

    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Sampler:
    """The server's RSS every 20 ms, and a real client's one-image requests on fresh connections, until stopped."""

    def __init__(self, server: Served, body: bytes, header: int):
        self.server, self.stop_event, self.rss, self.ok, self.failed = server, threading.Event(), [], 0, 0
        self.start = time.perf_counter()
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header)}
        self.threads = [threading.Thread(target=self._sample, daemon=True),
                        threading.Thread(target=self._client, args=(body, headers), daemon=True)]
        for t in self.threads:
            t.start()

    def _sample(self):
        while not self.stop_event.is_set():
            self.rss.append(self.server.rss_mb())
            time.sleep(0.02)

    def _client(self, body, headers):
        while not self.stop_event.is_set():
            try:
                status, _ = request(self.server, "POST", f"/v2/models/{self.server.name}/infer", body, headers, 10)
                self.ok += status == 200
                self.failed += status != 200
            except OSError:
                self.failed += 1
                time.sleep(0.05)

    def finish(self) -> dict:
        self.stop_event.set()
        for t in self.threads:
            t.join()
        elapsed = time.perf_counter() - self.start
        return {"peak_mb": max(self.rss), "client_images_per_s": self.ok / elapsed, "client_failed": self.failed}


def wrk(server: Served, lua: Path, seconds: float) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "-s", str(lua), server.url +
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
        for per_request in (1, 8):
            body, header = binary_request(images[:per_request])
            (folder / f"req{per_request}.bin").write_bytes(body)
            lua = folder / f"post{per_request}.lua"
            lua.write_text(LUA.format(path=folder / f"req{per_request}.bin", header=header))
            for server in servers.values():
                wrk(server, lua, 1)  # warm-up
            runs: dict[str, list] = {k: [] for k in servers}
            for _ in range(args.rounds):
                for key, server in servers.items():
                    before, cpu = server.stats(), server.cpu_s()
                    result = wrk(server, lua, args.seconds)
                    cpu, after = server.cpu_s() - cpu, server.stats()
                    batch = (after[0] - before[0]) / max(1, after[1] - before[1])
                    result["batch"], result["cpu_us"] = batch, 1e6 * cpu / max(1, after[0] - before[0])
                    if key == "protected":
                        result["stream"] = stream_rate(model, images, max(1, round(batch)), args.seconds / 2)
                    runs[key].append(result)
            rows.append({"per_request": per_request, **runs})
    finally:
        for server in servers.values():
            server.stop()
    return rows


def floods(args, images: np.ndarray) -> list[tuple[str, str]]:
    server = Served(ROOT, args.artifacts)
    one, one_header = binary_request(images[:1])
    big = images[np.arange(64) % len(images)]
    big_body, big_header = binary_request(big)
    found = []
    try:
        for _ in range(20):
            request(server, "POST", f"/v2/models/{server.name}/infer", one,
                    {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(one_header)})
        found.append(("idle server", f"RSS {server.rss_mb():.0f} MB"))
        found.append(slow_headers(server, one, one_header))
        found.append(non_readers(server, raw(server, big_body, big_header), one, one_header))
        found.append(queue_flood(server, raw(server, big_body, big_header), one, one_header))
        found.append(bombs(server, images))
    finally:
        server.stop()
    # Slow headers against a server limited to 64 open files: the lock-out.
    limited = Served(ROOT, args.artifacts, nofile=64)
    try:
        found.append(slow_headers(limited, one, one_header, count=80, label="80 slow-header connections, 64-fd limit"))
    finally:
        limited.stop()
    return found


def slow_headers(server: Served, one: bytes, header: int, count: int = 150, label: str = "") -> tuple[str, str]:
    start_rss = server.rss_mb()
    socks, partial = [], f"POST /v2/models/{server.name}/infer HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nX-a: "
    for _ in range(count):
        s = socket.create_connection((server.host, server.port))
        s.sendall(partial.encode())
        socks.append(s)
    sampler = Sampler(server, one, header)
    time.sleep(7)  # the default header timeout is 5 s
    result = sampler.finish()
    still_open = sum(_open(s) for s in socks)
    for s in socks:
        s.close()
    return (label or f"{count} slow-header connections",
            f"{still_open} of {count} still open after 7 s; real client {result['client_images_per_s']:.0f} images/s "
            f"({result['client_failed']} failed); RSS {start_rss:.0f} -> peak {result['peak_mb']:.0f} MB")


def _open(s: socket.socket) -> bool:
    s.settimeout(0.2)
    try:
        while s.recv(1 << 20):
            pass
        return False  # EOF: the server closed it
    except TimeoutError:
        return True
    except OSError:
        return False


def non_readers(server: Served, payload: bytes, one: bytes, header: int, count: int = 100) -> tuple[str, str]:
    start_rss = server.rss_mb()
    sampler = Sampler(server, one, header)
    socks = []
    for _ in range(count):
        s = socket.create_connection((server.host, server.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(payload)
        socks.append(s)
    time.sleep(14)  # the default send timeout is 10 s
    result = sampler.finish()
    after = server.rss_mb()
    for s in socks:
        s.close()
    time.sleep(1)
    return (f"{count} clients that never read (64 images each, binary outputs)",
            f"RSS {start_rss:.0f} -> peak {result['peak_mb']:.0f} -> {after:.0f} MB after 14 s, "
            f"{server.rss_mb():.0f} MB once they close; real client {result['client_images_per_s']:.0f} images/s "
            f"({result['client_failed']} failed)")


def queue_flood(server: Served, payload: bytes, one: bytes, header: int, count: int = 300) -> tuple[str, str]:
    start_rss = server.rss_mb()
    sampler = Sampler(server, one, header)
    statuses: list[int] = []

    def client():
        try:
            with socket.create_connection((server.host, server.port), timeout=60) as s:
                s.sendall(payload)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += s.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head, re.I)[1])
                while len(rest) < length:
                    rest += s.recv(1 << 20)
                statuses.append(int(head.split()[1]))
        except OSError:
            statuses.append(0)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    result = sampler.finish()
    time.sleep(2)
    counts = {code: statuses.count(code) for code in sorted(set(statuses))}
    return (f"queue flood: {count} concurrent 64-image requests",
            f"statuses {counts} in {elapsed:.1f} s ({64 * counts.get(200, 0) / elapsed:.0f} images/s served); RSS "
            f"{start_rss:.0f} -> peak {result['peak_mb']:.0f} -> {server.rss_mb():.0f} MB 2 s later; real client "
            f"{result['client_images_per_s']:.0f} images/s ({result['client_failed']} refused)")


def bombs(server: Served, images: np.ndarray) -> tuple[str, str]:
    lines_before = len(server.stderr().splitlines())
    infer = f"/v2/models/{server.name}/infer"
    json_type = {"Content-Type": "application/json"}
    digits = ('{"inputs":[{"name":"image","datatype":"FP32","shape":[1,28,28,1],"data":[' + "9" * 5000 + "]}]}")
    nested = "[" * 100_000 + "]" * 100_000
    uint8 = (images[np.arange(64) % len(images)] * 255).astype(np.uint8)
    body, header = binary_request(uint8, json_outputs=True)
    codes = [request(server, "POST", infer, digits.encode(), json_type)[0],
             request(server, "POST", infer, nested.encode(), json_type)[0]]
    status, answer = request(server, "POST", infer, body, {"Content-Type": "application/octet-stream",
                                                           "Inference-Header-Content-Length": str(header)})
    lines = len(server.stderr().splitlines()) - lines_before
    return ("JSON bombs; a 50 KB request asking for JSON outputs",
            f"5000-digit integer: {codes[0]}, 100,000-deep nesting: {codes[1]}, {len(body) // 1024} KB request for "
            f"64 images as JSON: {status} ({len(answer)} bytes); {lines} server log lines")


def report(args, rows: list[dict], found: list[tuple[str, str]]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name")), platform.processor())
    out = ["# `runtime serve` on a hostile network", "",
           f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu}, {os.cpu_count()} cores, "
           f"Python {platform.python_version()}; `python -m benchmarks.serve_hostile --seconds {args.seconds:g} "
           f"--rounds {args.rounds}`. Default settings (max batch {MAX_BATCH}).", "",
           f"## Throughput: wrk -t1 -c{CONNECTIONS}, one prebuilt binary request, every output binary", "",
           "| images per request | protected: images/s (median of rounds) | baseline: images/s | protected / baseline |"
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
        out.append(f"| {n} | {statistics.median(ours):,.0f} ({', '.join(f'{x:,.0f}' for x in ours)}) | "
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
            f"the cores (load average at the end: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}).", "",
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
