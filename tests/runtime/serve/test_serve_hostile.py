"""`runtime serve` against an attacker on the network, over real sockets (issue 21): foreign Hosts, cross-site
requests, protective headers, JSON bombs, slow and idle connections, the connection cap, clients that never
read, the in-flight bytes budget and the JSON response cap. Chromium's side is tests/browser/test_explorer.py."""
from __future__ import annotations

import json
import socket
import time

import httpx
import numpy as np
import pytest
from serving import Server  # tests/serving.py

from runtime.preprocess import to_batch

ONE = np.zeros((1, 28, 28, 1), np.float32)


@pytest.fixture(scope="module")
def tight(reference_artifacts):
    """A server with short timeouts, few connections, a small budget and JSON cap, one extra Host and Origin."""
    srv = Server(reference_artifacts, "--max-batch", "64", "--header-timeout-s", "0.5", "--keepalive-timeout-s", "0.5",
                 "--send-timeout-s", "1", "--max-connections", "6", "--budget-mb", "20", "--max-json-mb", "1",
                 "--allow-host", "api.example", "--allow-origin", "http://app.example")
    yield srv
    code, err = srv.stop()
    assert code == 143 and "Traceback" not in err, err[-3000:]


def binary(images: np.ndarray, json_outputs: bool = False) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(images.shape),
                                     "parameters": {"binary_data_size": images.nbytes}}],
                         "parameters": {"binary_data_output": not json_outputs}}).encode()
    return header + images.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                       "Content-Type": "application/octet-stream"}


def infer(srv, headers=None, body=None, **kwargs) -> httpx.Response:
    if body is None:
        body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1],
                                       "data": ONE.ravel().tolist()}], "outputs": [{"name": "dense_1"}]})
        headers = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(f"{srv.url}/v2/models/{srv.name}/infer", content=body, headers=headers, timeout=30, **kwargs)


def one_line_error(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.content[:300]
    message = response.json()["error"]
    assert text in message and "\n" not in message, message


def test_only_the_servers_own_host_names_are_answered(healthy, tight):
    port = healthy.url.rsplit(":", 1)[1]
    url = f"{healthy.url}/v2/models/{healthy.name}"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
        assert httpx.get(url, headers={"Host": host}).status_code == 200, host
    for host in (f"rebind.evil.example:{port}", "localhost", f"localhost:{int(port) + 1}", "127.0.0.1.evil.example"):
        one_line_error(httpx.get(url, headers={"Host": host}), 421, "not a name of this server")
    # --allow-host NAME: with any port or none (a proxy's or a Kubernetes service's name)
    tight_url = f"{tight.url}/v2/models/{tight.name}"
    for host in ("api.example", "api.example:443", "API.example:8080"):
        assert httpx.get(tight_url, headers={"Host": host}).status_code == 200, host
    one_line_error(httpx.get(tight_url, headers={"Host": "api.example.evil"}), 421, "allow_hosts")


def test_cross_site_posts_and_simple_content_types_never_reach_the_model(healthy, tight):
    own = {"Origin": healthy.url}
    assert infer(healthy, own).status_code == 200
    for origin in ("http://evil.example", "null", f"http://localhost:{healthy.url.rsplit(':', 1)[1]}"):
        one_line_error(infer(healthy, {"Origin": origin}), 403, "cross-origin POST")
    index = httpx.post(f"{healthy.url}/v2/repository/index", content="{}", headers={"Origin": "http://evil.example"})
    one_line_error(index, 403, "cross-origin POST")
    assert httpx.get(f"{healthy.url}/v2/models/{healthy.name}", headers={"Origin": "http://evil.example"}).is_success
    # The simple requests a page may send anywhere without a preflight: refused even with the page's own Origin.
    body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1],
                                   "data": ONE.ravel().tolist()}]})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        one_line_error(infer(healthy, {"Content-Type": content_type, **own}, body), 415, "application/json")
    one_line_error(infer(healthy, own, body.encode()), 415, "missing")  # a browser's Blob without a type
    assert infer(healthy, {"Content-Type": "application/json; charset=utf-8"}, body).status_code == 200
    assert infer(healthy, {}, body).status_code == 200  # tritonclient sends no Content-Type (and no Origin)
    # --allow-origin ORIGIN
    assert infer(tight, {"Origin": "http://app.example"}).status_code == 200
    one_line_error(infer(tight, {"Origin": "https://app.example"}), 403, "allow_origins")


def test_every_response_carries_the_protective_headers(healthy):
    responses = [httpx.get(healthy.url + "/"), httpx.get(f"{healthy.url}/explorer.js"),
                 httpx.get(f"{healthy.url}/v2/models/{healthy.name}"), infer(healthy, {"Origin": "http://evil.example"}),
                 httpx.get(healthy.url + "/v2", headers={"Host": "evil.example"}), httpx.get(healthy.url + "/nothing")]
    for r in responses:
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp, csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in responses[0].text and " style=" not in responses[0].text  # nothing inline


def test_json_bombs_and_malformed_bodies_are_one_line_400s(tight):
    before = tight.stderr().count("\n")
    head = '{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": '
    bombs = [head + "[" + "9" * 5000 + "]}]}", "[" * 100_000 + "]" * 100_000, '{"a": ' * 50_000 + "1" + "}" * 50_000,
             head + "[" * 60 + "1" + "]" * 60 + "}]}",
             head + "[1e999, " + ", ".join(["18446744073709551616"] * 783) + "]}]}",
             '{"inputs": 1} trailing']
    for bomb in [b.encode() for b in bombs] + [b'{"inputs": "\xed\xa0\x80"}', b"\xff\xfe{}"]:
        response = infer(tight, {"Content-Type": "application/json"}, bomb)
        assert response.status_code == 400 and "\n" not in response.json()["error"], (bomb[:80], response.text)
    for _ in range(30):  # bad request lines: uvicorn logs each; the log is rate-limited
        with socket.create_connection(("127.0.0.1", int(tight.url.rsplit(":", 1)[1]))) as s:
            s.sendall(b"\x00\x01 nonsense\r\n\r\n")
            s.recv(1024)
    log = tight.stderr().splitlines()[before:]
    assert len(log) <= 12 and not any("Traceback" in line or line.startswith(" ") for line in log), log


def test_a_large_json_response_is_refused_with_a_hint_binary_is_not(tight, reference_model, digits):
    x = to_batch(digits[0][:2], reference_model.input_spec)
    body, headers = binary(x, json_outputs=True)  # all outputs of 2 images as JSON: up to 1.4 MB > 1 MB
    one_line_error(infer(tight, headers, body), 400, "binary_data_output")
    body, headers = binary(x)
    assert infer(tight, headers, body).status_code == 200


def test_partial_headers_are_dropped_and_real_clients_served(tight):
    host, port = "127.0.0.1", int(tight.url.rsplit(":", 1)[1])
    slow = [socket.create_connection((host, port)) for _ in range(12)]  # twice --max-connections
    for s in slow:
        s.sendall(f"POST /v2/models/{tight.name}/infer HTTP/1.1\r\nHost: {tight.host_port}\r\nX-a: ".encode())
    started = time.monotonic()
    assert infer(tight).status_code == 200  # the cap evicts the oldest partial-head connection
    assert time.monotonic() - started < 0.4
    time.sleep(1.0)  # past --header-timeout-s 0.5
    assert all(_closed(s) for s in slow)
    # An idle keep-alive connection is closed after --keepalive-timeout-s, one that sends nothing after the header
    # timeout.
    kept, silent = socket.create_connection((host, port)), socket.create_connection((host, port))
    kept.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: {tight.host_port}\r\n\r\n".encode())
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(1.0)
    assert _closed(kept) and _closed(silent)
    for s in slow + [kept, silent]:
        s.close()


def test_connections_beyond_the_cap_are_refused_while_all_are_busy(tight):
    host, port = "127.0.0.1", int(tight.url.rsplit(":", 1)[1])
    busy = []
    for _ in range(6):  # heads complete, bodies stalled: being served, so never evicted
        s = socket.create_connection((host, port))
        s.sendall(f"POST /v2/models/{tight.name}/infer HTTP/1.1\r\nHost: {tight.host_port}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{".encode())
        busy.append(s)
    time.sleep(0.2)
    response = infer(tight)
    one_line_error(response, 503, "too many open connections")
    assert response.headers["retry-after"] == "1"
    for s in busy:
        s.close()
    time.sleep(0.2)
    assert infer(tight).status_code == 200


def test_a_client_that_never_reads_holds_the_budget_until_dropped(tight, reference_model, digits):
    x = to_batch(np.resize(digits[0], (64, 28, 28)), reference_model.input_spec)
    body, headers = binary(x)  # 64 images, every output binary: a 7.5 MB response, 15+ MB of the 20 MB budget
    request = (f"POST /v2/models/{tight.name}/infer HTTP/1.1\r\nHost: {tight.host_port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + f"Content-Length: {len(body)}\r\n\r\n")
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", int(tight.url.rsplit(":", 1)[1])))
    reader.sendall(request.encode() + body)
    time.sleep(0.3)  # answered, and stuck in the write buffer
    refused = infer(tight, headers, body)
    one_line_error(refused, 503, "busy")
    assert refused.headers["retry-after"] == "1"
    time.sleep(2.5)  # past --send-timeout-s 1: dropped, and its bytes given back
    assert infer(tight, headers, body).status_code == 200
    got = b""
    reader.settimeout(5)
    try:
        while chunk := reader.recv(1 << 20):
            got += chunk
    except ConnectionResetError:
        pass
    reader.close()
    assert got.startswith(b"HTTP/1.1 200") and len(got) < 7_000_000  # cut off, not delivered whole


def _closed(s: socket.socket) -> bool:
    s.settimeout(1)
    try:
        while s.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
