"""The consistency error tables: printed by `pytest -v`, not by quiet runs."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from runtime.compare import DEFAULT_TOLERANCE, compare_outputs


def load_conftest():
    """A fresh copy of tests/consistency/conftest.py, so its table store starts empty."""
    spec = importlib.util.spec_from_file_location("consistency_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Terminal:
    def __init__(self):
        self.lines = []

    def section(self, title):
        self.lines.append(f"== {title} ==")

    def write_line(self, line):
        self.lines.extend(line.splitlines())


class Config:
    def __init__(self, verbosity):
        self.verbosity = verbosity

    def get_verbosity(self):
        return self.verbosity


def summary(verbosity: int) -> list[str]:
    module = load_conftest()
    diffs = compare_outputs({"conv2d": np.ones((2, 3))}, {"conv2d": np.ones((2, 3))})
    for pair in ("tf vs keras", "onnx vs keras", "onnx vs tf"):
        module.record_errors("reference", pair, "2 images", diffs, DEFAULT_TOLERANCE)
    terminal = Terminal()
    module.pytest_terminal_summary(terminal, Config(verbosity))
    return terminal.lines


def test_quiet_runs_print_no_tables():
    assert summary(-1) == []
    assert summary(0) == ["consistency: per-output error tables are shown with -v"]


def test_verbose_runs_print_every_comparison():
    lines = summary(1)
    assert lines[0].startswith("== consistency: per-output errors")
    rows = [ln for ln in lines if ln.startswith("| ") and "conv2d" in ln]
    assert len(rows) == 3 and all(row.endswith("| yes |") for row in rows)
