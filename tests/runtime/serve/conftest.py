"""Fixtures of the serving tests: one real server for the session, the in-process model it must match."""
from __future__ import annotations

import time

import pytest
from serving import MAX_BATCH, Server  # tests/serving.py


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
