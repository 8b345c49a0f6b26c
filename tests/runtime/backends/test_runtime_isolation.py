"""The ONNX path needs only numpy and onnxruntime: checked in fresh interpreters through sys.modules."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ["tensorflow", "keras", "matplotlib", "tf2onnx", "onnx"]
# Run first in the child: makes these packages unimportable, as in an ONNX-only install
# (importlib.util.find_spec also reports them absent).
HIDE_HEAVY = f"import sys\nfor _m in {HEAVY!r}: sys.modules[_m] = None\n"


def python(code: str) -> dict:
    """Run code in a fresh interpreter; it prints one JSON line last, which is returned."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_runtime_imports_no_framework():
    loaded = python("import json, sys, runtime\n"
                    f"print(json.dumps([m for m in {HEAVY + ['onnxruntime']!r} if m in sys.modules]))")
    assert loaded == []


def test_onnx_backend_runs_without_tensorflow(reference_artifacts):
    code = f"""
import json, sys
import numpy as np
import runtime
with runtime.load({str(reference_artifacts)!r}, backend="onnx") as m:
    out = m.run(np.zeros((2, 28, 28), np.uint8))
    streamed = sum(len(d["conv2d"]) for d in m.stream(np.zeros((5, 28, 28), np.uint8), batch_size=2))
print(json.dumps({{"shapes": {{k: list(v.shape) for k, v in out.items()}}, "streamed": streamed,
                  "heavy": [k for k in {HEAVY!r} if k in sys.modules]}}))
"""
    result = python(code)
    assert result["heavy"] == []
    assert result["shapes"]["conv2d"] == [2, 26, 26, 32] and result["streamed"] == 5


def test_onnx_only_install_simulated(reference_artifacts):
    # With the heavy packages unimportable, ONNX works and TF is a clear BackendError.
    code = HIDE_HEAVY + f"""
import json
import numpy as np
import runtime
with runtime.load({str(reference_artifacts)!r}) as m:
    shape = list(m.run(np.zeros((28, 28), np.uint8))["dense_1"].shape)
try:
    runtime.load({str(reference_artifacts)!r}, backend="tf")
    tf_error = None
except runtime.BackendError as exc:
    tf_error = str(exc)
print(json.dumps({{"shape": shape, "installed": runtime.installed_backends(), "tf_error": tf_error}}))
"""
    result = python(code)
    assert result["shape"] == [1, 10] and result["installed"] == ["onnx"]
    assert "backend 'tf' needs the 'tensorflow' package" in result["tf_error"]
    assert "installed backends: ['onnx']" in result["tf_error"]


def run_cli_in_child(argv: list[str], hide_heavy: bool = False) -> dict:
    """`python -m runtime ARGV` via runpy in a child; returns exit code, heavy modules loaded, output."""
    code = (HIDE_HEAVY if hide_heavy else "") + f"""
import contextlib, io, json, runpy, sys
sys.argv = ["runtime", *{argv!r}]
out = io.StringIO()
code = 0
with contextlib.redirect_stdout(out):
    try:
        runpy.run_module("runtime", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if sys.modules.get(m) is not None],
                  "stdout": out.getvalue()}}))
"""
    return python(code)


def test_cli_with_the_onnx_backend_imports_no_tensorflow(reference_artifacts, tmp_path):
    info = run_cli_in_child(["info", str(reference_artifacts), "--backend", "onnx"])
    assert info["code"] == 0 and info["heavy"] == [] and "conv2d_1" in info["stdout"]
    np.save(tmp_path / "x.npy", np.zeros((3, 28, 28), np.uint8))
    run = run_cli_in_child(["run", str(reference_artifacts), "--input", str(tmp_path / "x.npy"),
                            "--out", str(tmp_path / "acts.npz"), "--backend", "onnx"])
    assert run["code"] == 0 and run["heavy"] == []
    with np.load(tmp_path / "acts.npz") as f:
        assert f["conv2d"].shape == (3, 26, 26, 32)


def test_derived_graphs_need_no_onnx_package(reference_artifacts, tmp_path):
    """The stats graph and float16 outputs are built without `onnx` (not in the [onnx] deployment)."""
    np.save(tmp_path / "x.npy", np.full((5, 28, 28), 200, np.uint8))
    stats = run_cli_in_child(["stats", str(reference_artifacts), "--input", str(tmp_path / "x.npy"),
                              "--out", str(tmp_path / "stats"), "--engine", "graph"], hide_heavy=True)
    assert stats["code"] == 0 and stats["heavy"] == [], stats
    run = run_cli_in_child(["run", str(reference_artifacts), "--input", str(tmp_path / "x.npy"),
                            "--out", str(tmp_path / "acts.npz"), "--dtype", "float16"], hide_heavy=True)
    assert run["code"] == 0 and run["heavy"] == [], run
    with np.load(tmp_path / "acts.npz") as f:
        assert f["conv2d"].dtype == np.float16


def test_cli_info_without_tensorflow_installed_says_so(reference_artifacts):
    info = run_cli_in_child(["info", str(reference_artifacts)], hide_heavy=True)
    assert info["code"] == 0
    assert re.search(r"^\s+tf\s+not installed\s+needs the 'tensorflow' package$", info["stdout"], re.M)
    assert re.search(r"^\s+onnx\s+onnxruntime \S+\s+devices cpu", info["stdout"], re.M)


def requirement_name(spec: str) -> str:
    return re.split(r"[\s<>=!~\[;(]", spec, maxsplit=1)[0].lower()


def test_core_dependencies_allow_an_onnx_only_install():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(map(requirement_name, project["dependencies"])) == ["numpy", "tqdm"]  # tqdm: pure Python
    extras = project["optional-dependencies"]
    assert [requirement_name(r) for r in extras["onnx"]] == ["onnxruntime"]
    assert [requirement_name(r) for r in extras["gpu"]] == ["onnxruntime-gpu"]  # never both: same module


    def resolved(extra: str) -> set[str]:  # follows "featuremaps[a,b]" self-references
        names = set()
        for spec in extras[extra]:
            if requirement_name(spec) == "featuremaps":
                names |= set().union(*(resolved(e) for e in re.search(r"\[(.*)\]", spec)[1].split(",")))
            else:
                names.add(requirement_name(spec))
        return names

    assert {"tensorflow", "tf2onnx", "onnx", "onnxruntime"} <= resolved("export")  # heavy packages: extras only
    assert "onnxruntime-gpu" not in resolved("dev")
