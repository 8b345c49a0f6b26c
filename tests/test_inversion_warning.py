"""`runtime run` and `viz` on dark-on-light image files: one warning line naming --invert, and the work goes on."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import runtime.images
import viz.cli
from runtime.cli.main import main as runtime_main
from runtime.cli.process import run_cli
from runtime.data.mnist import shipped_digits


@pytest.fixture
def paper_digits(tmp_path, monkeypatch):
    """Two shipped digits saved dark-on-light, as scanned from paper; the warning not yet given."""
    monkeypatch.setattr(runtime.images, "_warned", False)
    x, _ = shipped_digits()
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"paper_{i}.png")
        Image.fromarray(255 - x[i]).save(paths[-1])
    return paths


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


def test_runtime_run_warns_once(reference_artifacts, paper_digits, tmp_path, capsys):
    code = run_cli(runtime_main, ["run", str(reference_artifacts), "--input", *map(str, paper_digits),
                                  "--out", str(tmp_path / "acts.npz")])
    err = capsys.readouterr().err
    assert code == 0, err
    [line] = warning_lines(err)
    assert "paper_0.png' looks like dark strokes on a light background" in line and "pass --invert" in line
    with np.load(tmp_path / "acts.npz") as f:
        assert f["dense_1"].shape == (2, 10)


def test_runtime_run_with_invert_is_silent(reference_artifacts, paper_digits, tmp_path, capsys):
    code = run_cli(runtime_main, ["run", str(reference_artifacts), "--input", *map(str, paper_digits),
                                  "--invert", "--out", str(tmp_path / "acts.npz")])
    assert code == 0 and warning_lines(capsys.readouterr().err) == []


def test_viz_image_warns(reference_artifacts, paper_digits, tmp_path, capsys):
    code = run_cli(viz.cli.main, [str(reference_artifacts), "--image", str(paper_digits[0]),
                                  "--out", str(tmp_path / "figures")])
    err = capsys.readouterr().err
    assert code == 0, err
    [line] = warning_lines(err)
    assert "--invert" in line
