"""Saved pytest-benchmark JSON, as the reports read it: where the newest run is, its contents, its machine.

benchmarks/report.py (the whole report) and benchmarks/serve_report.py (its serving section, also a
command of its own) both read runs through here.
"""
from __future__ import annotations

import json
from pathlib import Path

from runtime.errors import FeatureMapsError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"  # the tracked reports: written only when a command is told to


class ReportError(FeatureMapsError):
    """The benchmark JSON is missing or not what this report reads."""


def find_latest(folder: Path = ROOT / ".benchmarks") -> Path:
    """The newest *.json under folder, searched recursively."""
    found = sorted(folder.rglob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not found:
        raise ReportError(f"no benchmark JSON under {folder}; run `pytest benchmarks/ --benchmark-only "
                          "--benchmark-autosave` first, or pass the JSON path")
    return found[-1]


def load(path: Path) -> dict:
    """The JSON of one saved run (pytest-benchmark's: a dict with a 'benchmarks' list)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read benchmark JSON {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ReportError(f"{path} is not pytest-benchmark JSON (no 'benchmarks' list)")
    return data


def machine_line(data: dict) -> str:
    """One line naming the machine a run measured: CPU, cores, system, Python, GPUs, library versions."""
    m = data.get("machine_info", {})
    cpu = m.get("cpu", {})
    fm = m.get("featuremaps", {})
    cores = fm.get("cpus_usable") or cpu.get("count")
    parts = [f"{cpu.get('brand_raw') or m.get('processor') or m.get('machine', '?')}",
             f"{cores} cores" if cores else None,
             f"{m.get('system', '')} {m.get('release', '')}".strip() or None,
             f"Python {m.get('python_version', '?')}"]
    libs = [f"{k} {fm[k]}" for k in ("onnxruntime", "tensorflow", "keras", "numpy") if fm.get(k)]
    gpus = fm.get("gpu_names") or fm.get("gpus")
    parts.append("GPU: " + (", ".join(gpus) if gpus else "none"))
    return ", ".join(p for p in parts if p) + (f"; {', '.join(libs)}" if libs else "")
