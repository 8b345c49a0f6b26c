"""A real `python -m runtime serve` subprocess on 127.0.0.1 with a free port: for tests/runtime/serve and benchmarks."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60
MAX_BATCH = 16  # of the session server in tests/runtime/serve


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
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/v2/models/([^\s;]+)", self.banner)
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
