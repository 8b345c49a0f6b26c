"""Bad requests over real HTTP get a 4xx with {"error": "..."}, and the server keeps serving (fixture `healthy`)."""
from __future__ import annotations

import json
import socket

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from serving import MAX_BATCH, Server  # tests/serving.py
from tritonclient.utils import InferenceServerException


def tensor(x: np.ndarray, datatype: str = "FP32", **extra) -> dict:
    return {"name": "image", "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist(), **extra}


def post(server, body: bytes | dict | str, headers: dict | None = None, model: str | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    url = f"{server.url}/v2/models/{model or server.name}/infer"
    return httpx.post(url, content=content, headers=headers or {}, timeout=30)


def binary_body(x: np.ndarray, size: int | None = None, header_shift: int = 0) -> tuple[bytes, dict]:
    raw = x.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw) if size is None else size}}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header) + header_shift)}


ONE = np.full((1, 28, 28, 1), 0.5, np.float32)
NAN = ONE.copy()
NAN[0, 3, 4, 0] = np.nan

CASES = {
    "malformed JSON": (b'{"inputs": [', None, 400, "not valid JSON"),
    "not an object": (b"[1, 2]", None, 400, "JSON object"),
    "no inputs": ({"outputs": [{"name": "conv2d"}]}, None, 400, "'inputs'"),
    "unknown input name": ({"inputs": [{**tensor(ONE), "name": "pixels"}]}, None, 400, "unknown input 'pixels'"),
    "wrong shape": ({"inputs": [tensor(np.zeros((1, 28, 27, 1), np.float32))]}, None, 400, "[N, 28, 28, 1]"),
    "wrong rank": ({"inputs": [tensor(np.zeros((28, 28), np.float32))]}, None, 400, "does not match"),
    "wrong datatype": ({"inputs": [tensor(ONE, "FP64")]}, None, 400, "['FP32', 'UINT8', 'INT8'"),
    "too few values": ({"inputs": [{**tensor(ONE), "data": [0.5] * 700}]}, None, 400, "784"),
    "strings as data": ({"inputs": [{**tensor(ONE), "data": ["a"] * 784}]}, None, 400, "784 numbers"),
    "UINT8 out of range": ({"inputs": [tensor(np.full((1, 28, 28, 1), 300), "UINT8")]}, None, 400, "0..255"),
    "NaN in JSON": ({"inputs": [tensor(NAN)]}, None, 400, "NaN"),
    "raw pixels as FP32": ({"inputs": [tensor(ONE * 255)]}, None, 400, "preprocessed"),
    "unknown output": ({"inputs": [tensor(ONE)], "outputs": [{"name": "conv9"}]}, None, 400,
                       "available: ['dense_1', 'conv2d', 'conv2d_1']"),
    "bad binary_data flag": ({"inputs": [tensor(ONE)], "outputs": [{"name": "conv2d", "parameters": {
        "binary_data": "yes"}}]}, None, 400, "true or false"),
    "more images than the max batch": ({"inputs": [tensor(np.zeros((MAX_BATCH + 1, 28, 28, 1), np.float32))]},
                                       None, 400, f"at most {MAX_BATCH}"),
    "binary byte count wrong": (*binary_body(ONE, size=100), 400, "binary_data_size is 100"),
    "binary NaN": (*binary_body(NAN), 400, "NaN"),
    "binary shape vs bytes": (*binary_body(np.zeros((1, 28, 28, 2), np.float32)), 400, "does not match"),
    "header length past the body": (*binary_body(ONE, header_shift=10 ** 6), 400, "Inference-Header-Content-Length"),
    "header length not a number": (binary_body(ONE)[0], {"Inference-Header-Content-Length": "12a"}, 400,
                                   "Inference-Header-Content-Length"),
    "header length too short": (*binary_body(ONE, header_shift=-5), 400, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_gets_4xx_with_error(healthy, case):
    body, headers, status, words = CASES[case]
    response = post(healthy, body, headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert list(error) == ["error"] and words in error["error"], error


def test_unknown_model_and_version(healthy):
    response = post(healthy, {"inputs": [tensor(ONE)]}, model="resnet")
    assert response.status_code == 404 and response.json() == {
        "error": f"unknown model 'resnet'; this server has {healthy.name!r}"}
    response = httpx.get(f"{healthy.url}/v2/models/{healthy.name}/versions/2", timeout=10)
    assert response.status_code == 404 and "available: ['1']" in response.json()["error"]
    response = httpx.get(f"{healthy.url}/v3/anything", timeout=10)
    assert response.status_code == 404 and list(response.json()) == ["error"]


def test_tritonclient_sees_the_error(healthy):
    c = triton.InferenceServerClient(healthy.host_port)
    inp = triton.InferInput("image", [1, 28, 28, 1], "FP32")
    inp.set_data_from_numpy(ONE)
    with pytest.raises(InferenceServerException, match="unknown output 'nope'") as info:
        c.infer(healthy.name, [inp], outputs=[triton.InferRequestedOutput("nope")])
    assert info.value.status() == "400"


def test_body_over_the_limit(healthy):
    """Refused from its Content-Length, and (chunked, no length) as soon as it passes the limit."""
    big = b"0" * (30 * 1024 * 1024)
    response = post(healthy, big)
    assert response.status_code == 413 and "exceeds this server's limit" in response.json()["error"]

    def chunks():
        for _ in range(30):
            yield b"1" * (1024 * 1024)

    response = httpx.post(f"{healthy.url}/v2/models/{healthy.name}/infer", content=chunks(), timeout=30)
    assert response.status_code == 413 and "exceeds" in response.json()["error"]


@pytest.mark.parametrize("sent", [0, 1000])
def test_client_disconnects_mid_request(healthy, sent):
    host, port = healthy.host_port.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST /v2/models/{healthy.name}/infer HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: 50000\r\n\r\n".encode() + b"{" * sent)
    # The `healthy` fixture then checks the server still answers; a good request still works:
    assert post(healthy, {"inputs": [tensor(ONE)]}).status_code == 200


def test_stalled_body_gets_408(reference_artifacts):
    """A client that sends part of its body and stalls is answered 408 after --body-timeout-s, not held forever."""
    srv = Server(reference_artifacts, "--body-timeout-s", "0.5")
    try:
        host, port = srv.host_port.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(f"POST /v2/models/{srv.name}/infer HTTP/1.1\r\nHost: {srv.host_port}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{".encode())
            answer = b""
            while b"}" not in answer:  # bounded by the socket timeout
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and "within 0.5 s" in json.loads(body)["error"], answer
        assert post(srv, {"inputs": [tensor(ONE)]}).status_code == 200
    finally:
        srv.stop()
