"""`python -m export.reference`: never replaces a model silently; log-friendly output when piped."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from export.cli import reference_main as main
from export.reference import REFERENCE_MODEL
from runtime.cli.process import run_cli

ROOT = Path(__file__).resolve().parents[2]


def cli_error(capsys, *args) -> str:
    assert run_cli(main, list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_refuses_to_replace_the_shipped_model_or_any_existing_file(capsys, tmp_path):
    before = REFERENCE_MODEL.stat().st_mtime_ns
    err = cli_error(capsys, "--out", str(REFERENCE_MODEL))
    assert "already exist" in err and "shipped with featuremaps" in err and "--force" in err
    assert REFERENCE_MODEL.stat().st_mtime_ns == before
    (tmp_path / "old.json").write_text("{}")  # the record alone is enough to refuse
    assert "old.json already exists" in cli_error(capsys, "--out", str(tmp_path / "old.keras"))
    assert "must end in .keras or .h5" in cli_error(capsys, "--out", str(tmp_path / "model.onnx"))
    assert "positive integer" in cli_error(capsys, "--epochs", "0")


def test_help_describes_every_option():
    out = subprocess.run([sys.executable, "-m", "export.reference", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for option in ("--data", "--epochs", "--out", "--force"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(option))
        assert len(line.split()) > 2, f"{option} has no help text"


def test_piped_training_writes_plain_lines_and_a_new_file(tmp_path, mnist_npz):
    with np.load(mnist_npz) as f:  # a small real subset keeps this to seconds
        small = {"x_train": f["x_train"][:640], "y_train": f["y_train"][:640],
                 "x_test": f["x_test"][:200], "y_test": f["y_test"][:200]}
    np.savez(tmp_path / "small.npz", **small)
    out = tmp_path / "retrained.keras"
    proc = subprocess.run([sys.executable, "-m", "export.reference", "--data", str(tmp_path / "small.npz"),
                           "--epochs", "2", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\x1b" not in proc.stdout + proc.stderr and "\r" not in proc.stdout, "progress-bar escape codes in a log"
    assert "Epoch 1/2" in proc.stdout and "Epoch 2/2" in proc.stdout
    assert f"saved {out}" in proc.stdout
    assert out.is_file() and (tmp_path / "retrained.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retrained.json", "retrained.keras", "small.npz"]
