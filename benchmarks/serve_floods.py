"""The floods of benchmarks/serve_hostile.py, and the server it runs: slow headers, clients that never read, a queue
flood, JSON bombs and a large JSON response, each reported with the server's RSS and a real client's throughput."""
from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAX_BATCH = 64


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
