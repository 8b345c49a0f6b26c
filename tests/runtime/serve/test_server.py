"""runtime.serve.server from Python: ServeOptions and its messages, model_name, serve's on_ready and its socket."""
from __future__ import annotations

import re
import socket

import pytest

from runtime.artifacts.manifest import read_manifest
from runtime.errors import UsageError
from runtime.serve.server import ServeOptions, Serving, model_name, serve


@pytest.mark.parametrize("changes, words", [
    ({"max_batch": 0}, "`max_batch` >= 1"),
    ({"max_delay_ms": -1}, "`max_delay_ms` >= 0"),
    ({"port": 70000}, "`port` 0..65535"),
    ({"body_timeout_s": 0}, "`body_timeout_s` > 0"),
    ({"header_timeout_s": 0, "budget_mb": -1}, "a value > 0; got `header_timeout_s` 0, `budget_mb` -1"),
    ({"max_connections": 0}, "`max_connections` 0"),
])
def test_options_name_their_parameters(changes, words):
    with pytest.raises(UsageError, match=re.escape(words)) as caught:
        ServeOptions(**changes)
    assert "--" not in str(caught.value)


def test_model_name_names_the_parameter(reference_artifacts):
    manifest = read_manifest(reference_artifacts, verify_files=False)
    assert model_name(manifest) == manifest.source_model["name"]
    assert model_name(manifest, "digits") == "digits"
    with pytest.raises(UsageError, match="model name 'a/b' is not allowed.*; pass `name`$"):
        model_name(manifest, "a/b")


class Stop(Exception):
    """Raised by on_ready: serve returns before uvicorn runs."""


def test_on_ready_gets_where_it_listens_and_the_socket_closes(reference_artifacts):
    seen: list[Serving] = []

    def on_ready(serving: Serving) -> None:
        seen.append(serving)
        raise Stop

    with pytest.raises(Stop):
        serve(reference_artifacts, ServeOptions(port=0, name="digits"), on_ready=on_ready)
    (serving,) = seen
    assert (serving.name, serving.backend, serving.device) == ("digits", "onnx", "cpu")
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", serving.url)
    assert match and int(match[1]) > 0 and serving.model_url == f"{serving.url}/v2/models/digits"
    with socket.socket() as again:  # closed by serve: free to bind again
        again.bind(("127.0.0.1", int(match[1])))


def test_busy_port_and_unresolvable_host(reference_artifacts):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(reference_artifacts, ServeOptions(port=port))
    with pytest.raises(UsageError, match="cannot resolve `host` 'no such host'"):
        serve(reference_artifacts, ServeOptions(host="no such host", port=0))


def test_allowed_hosts_are_the_bound_address_and_loopback_names_with_the_port():
    from runtime.serve.guard import allowed_hosts

    exact, names = allowed_hosts("::1", 8000, ["api.example", "Proxy.example:443"])
    assert exact == {b"[::1]:8000", b"localhost:8000", b"127.0.0.1:8000", b"proxy.example:443"}
    assert names == {b"api.example"}
    exact, _ = allowed_hosts("10.0.0.5", 80)
    assert b"10.0.0.5" in exact and b"10.0.0.5:80" in exact and b"localhost" in exact
