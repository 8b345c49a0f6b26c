"""viz never overwrites its own outputs; bad names or a missing drawing stack are one-line errors leaving nothing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from runtime.artifacts.manifest import OutputSpec
from runtime.cli.process import run_cli
from viz.cli import main
from viz.draw import file_names, write_figures

ROOT = Path(__file__).resolve().parents[2]


def test_an_output_named_comparison_keeps_its_own_grid(tmp_path, fake_model):
    fake_model.manifest.outputs[1] = OutputSpec("comparison", "comparison", "Conv2D", (None, 26, 26, 32), "NHWC",
                                                "feature_map")
    fake_model.output_names = fake_model.manifest.output_names
    written = write_figures(fake_model, np.zeros((28, 28), np.uint8), tmp_path)
    assert [p.name for p in written] == ["comparison_2.png", "conv2d_1.png", "comparison.png"]
    assert len({p.read_bytes() for p in written}) == 3  # three different images: nothing overwritten
    assert set(file_names(["Comparison", "a b", "a_b"]).values()) == {"Comparison_2.png", "a_b.png", "a_b_2.png"}


def one_line_error(capsys, *argv) -> str:
    assert run_cli(main, list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_300_character_names_are_one_line_errors(capsys, tmp_path, reference_artifacts, shipped_digits_only):
    long_out = tmp_path / ("x" * 300) / "figures"
    assert "cannot create the --out folder" in one_line_error(capsys, str(reference_artifacts), "--out", str(long_out))
    crafted = Path(shutil.copytree(reference_artifacts, tmp_path / "crafted"))
    data = json.loads((crafted / "manifest.json").read_text())
    data["outputs"][1]["name"] = "c" * 300
    (crafted / "manifest.json").write_text(json.dumps(data))
    assert "is not allowed" in one_line_error(capsys, str(crafted), "--out", str(tmp_path / "figs"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "keras_home") == ["crafted"]  # no folder created


def test_without_pillow_one_line_naming_the_extra_and_no_folder(tmp_path, reference_artifacts):
    """An [onnx]-only deployment has no Pillow: `python -m viz` says which extra to install, creates nothing."""
    out = tmp_path / "figures"
    code = ("import sys; sys.modules['PIL'] = None  # as if Pillow were not installed\n"
            "from runtime.cli.process import run_cli; from viz.cli import main\n"
            f"raise SystemExit(run_cli(main, [{str(reference_artifacts)!r}, '--out', {str(out)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "featuremaps[viz]" in result.stderr and "Pillow" in result.stderr
    assert not out.exists()
