"""NVIDIA's tritonclient and plain JSON against a real `python -m runtime serve`: results equal runtime.run bitwise."""
from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.http as triton
from serving import Server  # tests/serving.py

from runtime.preprocess import to_batch


def client(server, concurrency: int = 1) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.host_port, concurrency=concurrency, network_timeout=30)


def infer_binary(c, name: str, x: np.ndarray, outputs=None, binary: bool = True):
    inp = triton.InferInput("image", list(x.shape), "FP32" if x.dtype == np.float32 else "UINT8")
    inp.set_data_from_numpy(x, binary_data=binary)
    wanted = None if outputs is None else [triton.InferRequestedOutput(n, binary_data=binary) for n in outputs]
    return c.infer(name, [inp], outputs=wanted)


def test_health_and_metadata(server, reference_model):
    c = client(server)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(server.name)
    assert c.get_server_metadata()["extensions"] == ["binary_tensor_data", "statistics"]
    meta = c.get_model_metadata(server.name)
    manifest = reference_model.manifest
    assert meta["name"] == server.name == manifest.source_model["name"]
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        (o.name, "FP32", [-1, *o.shape[1:]]) for o in manifest.outputs]
    assert meta["parameters"] == {"labels": manifest.labels, "roles": {o.name: o.role for o in manifest.outputs}}
    assert c.get_model_metadata(server.name, model_version="1") == meta
    assert not c.is_model_ready("other_model")


def test_binary_all_outputs_equal_run(server, reference_model, digits):
    x = to_batch(digits[0][:5], reference_model.input_spec)  # preprocessed float32 [5,28,28,1]
    result = infer_binary(client(server), server.name, x)  # no outputs named: binary_data_output
    expected = reference_model.run(x)
    assert [o["name"] for o in result.get_response()["outputs"]] == list(expected)
    for name, want in expected.items():
        got = result.as_numpy(name)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.array_equal(got, want), name  # bit for bit


def test_selected_outputs_json_and_uint8(server, reference_model, digits):
    pixels = digits[0][5:8, :, :, None]  # raw uint8 pixels: the server scales them as the manifest says
    result = infer_binary(client(server), server.name, pixels, outputs=["conv2d_1", "dense_1"], binary=False)
    outputs = result.get_response()["outputs"]
    assert [o["name"] for o in outputs] == ["conv2d_1", "dense_1"] and all("data" in o for o in outputs)
    expected = reference_model.run(pixels)
    for name in ("conv2d_1", "dense_1"):
        assert np.array_equal(result.as_numpy(name), expected[name]), name  # JSON floats round-trip exactly


def test_plain_json_as_curl_sends_it(server, reference_model, digits):
    """What `curl -X POST -H 'Content-Type: application/json' -d @request.json URL/infer` does."""
    pixels = digits[0][:2]
    body = {"inputs": [{"name": "image", "shape": [2, 28, 28, 1], "datatype": "UINT8",
                        "data": pixels.reshape(2, 28, 28, 1).tolist()}],  # nested lists are accepted too
            "outputs": [{"name": "dense_1"}], "id": "req-1"}
    request = urllib.request.Request(f"{server.url}/v2/models/{server.name}/infer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "application/json"
        answer = json.loads(response.read())
    assert answer["id"] == "req-1" and answer["model_name"] == server.name
    (out,) = answer["outputs"]
    assert out["name"] == "dense_1" and out["shape"] == [2, 10] and out["datatype"] == "FP32"
    got = np.asarray(out["data"], np.float32).reshape(2, 10)
    assert np.array_equal(got, reference_model.run(pixels)["dense_1"])


def test_static_page_and_explorer_samples(server, digits):
    import httpx

    page = httpx.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "<html" in page.text
    samples = httpx.get(server.url + "/explorer/samples", timeout=10).json()
    x, y = digits
    assert len(samples) == len(x)
    assert np.array_equal(np.asarray([s["pixels"] for s in samples], np.uint8), x)
    assert [s["label"] for s in samples] == y.tolist()


def test_samples_empty_for_other_input_shapes(zoo_artifacts):
    import httpx

    srv = Server(zoo_artifacts("rgb_small"), "--name", "rgb")  # 32x32x3 input: no shipped digit fits it
    try:
        assert httpx.get(srv.url + "/explorer/samples", timeout=10).json() == []
        assert client(srv).get_model_metadata("rgb")["inputs"][0]["shape"] == [-1, 32, 32, 3]
    finally:
        srv.stop()


def test_concurrent_requests_are_batched_and_split_back(reference_artifacts, reference_model, digits):
    """With a 300 ms window, 8 concurrent one-image requests run as few batches, each answer its own image's."""
    srv = Server(reference_artifacts, "--max-batch", "8", "--max-delay-ms", "300")
    try:
        c = client(srv, concurrency=8)
        x = to_batch(digits[0][:8], reference_model.input_spec)
        pending = []
        for i in range(8):
            inp = triton.InferInput("image", [1, 28, 28, 1], "FP32")
            inp.set_data_from_numpy(x[i:i + 1])
            pending.append(c.async_infer(srv.name, [inp]))
        results = [p.get_result(timeout=30) for p in pending]
        expected = reference_model.run(x)
        for i, result in enumerate(results):
            for name in expected:
                assert np.array_equal(result.as_numpy(name)[0], expected[name][i]), (i, name)
        stats = c.get_inference_statistics(srv.name)["model_stats"][0]
        assert stats["inference_count"] == 8 and stats["request_count"] == 8
        assert stats["execution_count"] < 8  # merged: fewer model runs than requests
        c.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_requests_in_flight(reference_artifacts, reference_model, digits, sig):
    """A request waiting in the batcher when the signal arrives still gets its answer; then the server exits."""
    srv = Server(reference_artifacts, "--max-batch", "4", "--max-delay-ms", "2000")
    answer = {}

    def request():
        try:
            answer["result"] = infer_binary(client(srv), srv.name, digits[0][:1, :, :, None], outputs=["dense_1"])
        except Exception as exc:  # reported by the assertion below
            answer["error"] = exc

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.7)  # the request is now waiting out the 2 s batching window
    assert not answer, "answered before the signal: the test proves nothing"
    code, err = srv.stop(sig)
    thread.join(30)
    assert "error" not in answer, answer.get("error")
    assert np.array_equal(answer["result"].as_numpy("dense_1"), reference_model.run(digits[0][:1])["dense_1"])
    assert code == (143 if sig == signal.SIGTERM else 130) and "Traceback" not in err


def test_tf_backend_serves_the_same_maps(reference_artifacts, reference_model, digits):
    """--backend tf: same protocol; its maps agree with onnx's within the project's tolerance."""
    from runtime.compare import compare_outputs, failures

    srv = Server(reference_artifacts, "--backend", "tf")
    try:
        c = client(srv)
        assert c.get_model_metadata(srv.name)["platform"] == "tensorflow_savedmodel"
        result = infer_binary(c, srv.name, digits[0][:4, :, :, None])
        expected = reference_model.run(digits[0][:4])
        assert failures(compare_outputs({n: result.as_numpy(n) for n in expected}, expected)) == []
    finally:
        srv.stop()
