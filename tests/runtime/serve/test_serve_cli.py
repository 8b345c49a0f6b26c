"""`python -m runtime serve`: one-line errors before anything listens; the onnx server never imports TensorFlow."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from serving import ROOT  # tests/serving.py

from runtime.cli.main import main
from runtime.cli.process import run_cli


@pytest.mark.parametrize("args, words", [
    (["--max-batch", "0"], "--max-batch >= 1"),
    (["--max-delay-ms", "-1"], "--max-delay-ms >= 0"),
    (["--port", "70000"], "--port 0..65535"),
    (["--body-timeout-s", "0"], "--body-timeout-s > 0"),
    (["--backend", "trt"], "invalid choice"),
    (["--name", "a/b"], "model name 'a/b' is not allowed"),
    (["--device", "gpu"], "device 'gpu'"),
])
def test_bad_arguments_are_one_line(capsys, reference_artifacts, args, words):
    code = run_cli(main, ["serve", str(reference_artifacts), "--port", "0", *args])
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.startswith("error: ") and err.count("\n") == 1, err


def test_missing_artifacts_and_busy_port(capsys, tmp_path, reference_artifacts):
    assert run_cli(main, ["serve", str(tmp_path / "nothing"), "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert run_cli(main, ["serve", str(reference_artifacts), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_onnx_server_imports_no_tensorflow(reference_artifacts):
    code = f"""
import json, sys
import runtime.cli.main  # the dispatcher and its serve command import no web stack either
web = [m for m in ("starlette", "uvicorn") if m in sys.modules]
import runtime
from runtime.serve.app import create_app
with runtime.load({str(reference_artifacts)!r}) as model:
    create_app(model, "m")
print(json.dumps({{"web_before": web, "heavy": [m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"web_before": [], "heavy": []}
