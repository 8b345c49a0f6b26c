"""The wheel `python -m build` makes holds everything the packages need: code, shipped digits, reference model.

Built offline from a copy of the package folders (so the checkout gets no build/ or egg-info);
the install into fresh virtual environments is checked by scripts/check_install.sh.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("export", "runtime", "viz")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(src / "dist"),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [path] = (src / "dist").glob("featuremaps-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def package_files() -> set[str]:
    """Every file of the three packages in the checkout (caches aside)."""
    return {p.relative_to(ROOT).as_posix() for name in PACKAGES for p in (ROOT / name).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_wheel_holds_every_package_file(wheel):
    names = set(wheel.namelist())
    missing = sorted(package_files() - names)
    assert not missing, f"not in the wheel (add a package or package-data entry to pyproject.toml): {missing}"
    assert {"runtime/data/mnist_test_digits.npz", "export/data/mnist_cnn.keras", "export/data/mnist_cnn.json",
            "runtime/backends/onnx.py"} <= names
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks")]


def test_wheel_metadata_keeps_the_onnx_deployment_free_of_tensorflow(wheel):
    [meta_name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = Parser().parsestr(wheel.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    onnx = [r.split(";")[0].strip() for r in requires if 'extra == "onnx"' in r]
    assert [r.split(">")[0] for r in core] == ["numpy", "tqdm"]  # tqdm: pure Python, for progress bars
    assert [r.split(">")[0] for r in onnx] == ["onnxruntime"]
    assert {"onnx", "gpu", "tf", "viz", "export", "store", "ray", "dev"} <= set(meta.get_all("Provides-Extra"))
