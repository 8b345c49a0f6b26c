"""Coverage beyond Keras Applications: export every model of benchmarks/architectures.py and tabulate it.

Each model is built with random weights, saved (.keras, or .h5 for the legacy row) and exported with
default options in its own subprocess, so the peak RSS is that export's alone (os.wait4). A row passes
when the export verifies, or when a model refused by design is refused with the expected one line.

    python -m benchmarks.coverage                  # every architecture (a few minutes on 2 cores)
    python -m benchmarks.coverage --only audio_1d,unet_free

Writes benchmarks/results/architectures.md (and prints it as it goes).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "architectures.md"


def export_one(name: str, work: Path) -> dict:
    """In this (child) process: build, save and export one architecture; the row as a dict."""
    from benchmarks.architectures import ARCHITECTURES
    from export.pipeline import ExportOptions, export_model
    from runtime.errors import FeatureMapsError

    arch = next(a for a in ARCHITECTURES if a.name == name)
    path = work / f"{name}{arch.suffix}"
    arch.build().save(path)
    try:
        manifest = export_model(path, work / name, ExportOptions(imports=("benchmarks/custom_layers.py",)))
    except FeatureMapsError as exc:
        return {"result": "refused", "message": str(exc)}
    maps = [o for o in manifest.outputs if o.role == "feature_map"]
    v = manifest.verification
    return {"result": "exported", "maps": len(maps), "layouts": sorted({o.layout for o in maps}),
            "input": f"{manifest.input.dtype} {list(manifest.input.shape)} {manifest.input.layout}",
            "sizes": v.get("sizes"), "noise": v.get("noise_dtype"), "worst": max(
                e["max_abs"] for errors in v["outputs"].values() for e in errors.values())}


def run_one(name: str, work: Path, timeout: float) -> dict:
    """The child's row, plus its wall time and peak RSS."""
    started = time.perf_counter()
    out = work / f"{name}.json"
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.coverage", "--one", name, "--work", str(work),
                                 "--json", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        while True:  # os.wait4: this child's own rusage (its peak RSS)
            pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                proc.kill()
            time.sleep(0.2)
        proc.returncode = 0  # reaped above
        err.seek(0)
        tail = err.read().strip()[-300:]
    row = json.loads(out.read_text()) if out.is_file() else {"result": "crashed", "message": tail}
    row["seconds"] = round(time.perf_counter() - started, 1)
    row["rss_mb"] = round(usage.ru_maxrss / 1024) if usage else None
    return row


def verdict(arch, row: dict) -> str:
    if arch.refused:
        ok = row["result"] == "refused" and arch.refused in row["message"]
        return "refused by design" if ok else f"UNEXPECTED ({row['result']})"
    return "pass" if row["result"] == "exported" else f"FAIL ({row['result']})"


def table(rows: list[tuple]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    lines = ["# Coverage beyond Keras Applications", "",
             f"`python -m benchmarks.coverage` on {cpu} ({os.cpu_count()} cores), random weights, default options; "
             "models from benchmarks/architectures.py. s: wall time of the export's process (TensorFlow import "
             "included), peak MB its own peak RSS; the machine was shared with other work, so times are indicative.",
             "", "| model | exercises | result | feature maps (layouts) | input | s | peak MB | detail |",
             "|---|---|---|---|---|---|---|---|"]
    for arch, row in rows:
        if row["result"] == "exported":
            maps = f"{row['maps']} ({', '.join(row['layouts'])})"
            detail = f"max abs err {row['worst']:.1e}" + (f"; verified at {row['sizes']}" if row["sizes"] else "") \
                + (f"; {row['noise']} noise floor" if row["noise"] else "")
            inp = row["input"]
        else:
            maps, inp, detail = "", "", row.get("message", "").replace("|", "/")
        lines.append(f"| {arch.name} | {arch.exercises} | {verdict(arch, row)} | {maps} | {inp} | {row['seconds']} "
                     f"| {row['rss_mb']} | {detail} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated architecture names")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: export one in this subprocess
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        from runtime.backends.quiet_tf import import_tensorflow

        import_tensorflow()
        args.json.write_text(json.dumps(export_one(args.one, args.work)))
        return 0
    from benchmarks.architectures import ARCHITECTURES

    chosen = [a for a in ARCHITECTURES if not args.only or a.name in args.only.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for arch in chosen:
            rows.append((arch, run_one(arch.name, Path(work), args.timeout)))
            print(f"{arch.name}: {verdict(arch, rows[-1][1])} in {rows[-1][1]['seconds']} s", flush=True)
    text = table(rows)
    if not args.only:
        RESULTS.write_text(text)
    print(text)
    return 0 if all(not verdict(a, r).startswith(("FAIL", "UNEXPECTED")) for a, r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
