"""A real `python -m runtime serve` on 127.0.0.1 (a free port), started once per session as a subprocess."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_BATCH = 16
START_TIMEOUT_S = 60


class Server:
    """`python -m runtime serve ARTIFACTS --port 0 ARGS...`; .url once it listens; .stop() ends it with a signal."""

    def __init__(self, artifacts: Path, *args: str):
        self._stderr = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "serve", str(artifacts), "--port", "0", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            self.banner = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self.banner = ""
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/v2/models/(\S+)", self.banner)
        if not match:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"server did not start: {self.banner!r} {self.stderr()[-2000:]}")
        self.url, self.name = match.group(1), match.group(2)
        self.host_port = self.url.removeprefix("http://")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str]:
        """Send sig, wait for the exit: (exit code, stderr)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"server did not stop within {timeout} s after signal {sig}")
        finally:
            self.proc.stdout.close()
        return self.proc.returncode, self.stderr()

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()


@pytest.fixture(scope="session")
def server(reference_artifacts):
    """The reference CNN served with --max-batch 16 (default delay 0)."""
    srv = Server(reference_artifacts, "--max-batch", str(MAX_BATCH))
    yield srv
    code, err = srv.stop()
    assert code == 143 and "Traceback" not in err, err[-3000:]  # no request ever raised inside the server


@pytest.fixture(scope="session")
def reference_model(reference_artifacts):
    """runtime.load of the same artifacts in this process: what the server must reproduce bit for bit."""
    import runtime

    with runtime.load(reference_artifacts) as model:
        yield model


@pytest.fixture
def healthy(server):
    """After the test: the server still answers (bad requests never hurt it)."""
    yield server
    import httpx

    deadline = time.monotonic() + 5
    assert server.proc.poll() is None, "server process died"
    while True:
        try:
            assert httpx.get(server.url + "/v2/health/ready", timeout=5).status_code == 200
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
