"""The serving section of the benchmark report: results of benchmarks/bench_serve.py, against their targets.

    python -m benchmarks.serve_report [JSON] [--write | --out FILE]

`python -m benchmarks.report` includes this section whenever its JSON holds serving results; this
command prints it alone (newest JSON under .benchmarks/ by default), with the machine it ran on.
It writes a file only when asked: --write replaces the tracked benchmarks/results/serve.md, --out
writes FILE; a trial run never touches the tracked results.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from benchmarks.report_json import RESULTS, ReportError, find_latest, load, machine_line
from runtime.cli.process import run_cli

DEFAULT_OUT = RESULTS / "serve.md"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f} ms"


def _us(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:.0f} us"


def _rounds(r: dict) -> str:
    ratios = r.get("ratios") or []
    return f"; rounds {', '.join(f'{x:.2f}' for x in ratios)}" if len(ratios) > 1 else ""


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def serve_section(data: dict) -> list[str]:
    """Markdown lines for the serve_load and serve_single entries of a pytest-benchmark JSON (none: [])."""
    infos = [b.get("extra_info", {}) for b in data.get("benchmarks", [])]
    loads = [i for i in infos if i.get("kind") == "serve_load"]
    singles = [i for i in infos if i.get("kind") == "serve_single"]
    if not loads and not singles:
        return []
    lines = ["## Serving: Open Inference Protocol over loopback HTTP, against targets", ""]
    if loads:
        lines += ["| clients x images per request | images/s served | in-process Model.stream at the formed batch | "
                  "ratio, median round (target >= 0.6x) | mean formed batch | p50 / p99 latency | errors | "
                  "server RSS start -> end (max) | CPU per image: server / clients / in-process | load average |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(loads, key=lambda r: r.get("images_per_request", 1)):
            mb = 1024 * 1024
            rss = (f"{r['rss_start_bytes'] / mb:.1f} -> {r['rss_end_bytes'] / mb:.1f} "
                   f"({r['rss_max_bytes'] / mb:.1f}) MB"
                   if r.get("rss_start_bytes") else "n/a")
            lines.append(
                f"| {r['clients']} x {r.get('images_per_request', 1)} | {r['images_per_s']:,.0f} | "
                f"{r['inprocess_images_per_s']:,.0f} (batch {r['inprocess_batch']}) | **{r['ratio']:.2f}x** "
                f"({_met(r['ratio'] >= r['ratio_target'])}){_rounds(r)} | {r['mean_batch']:.1f} | {_ms(r['p50_s'])} / "
                f"{_ms(r['p99_s'])} | {r['errors']} | {rss} | {_us(r.get('server_cpu_s_per_image'))} / "
                f"{_us(r.get('client_cpu_s_per_image'))} / {_us(r.get('inprocess_cpu_s_per_image'))} | "
                f"{r.get('load_average', 'n/a')} |")
        lines.append("")
    for r in singles:
        ok = r["overhead_s"] <= r["overhead_target_s"]
        lines.append(f"- One request, one image, all outputs (binary), tritonclient: p50 **{_ms(r['served_p50_s'])}** "
                     f"(p99 {_ms(r['served_p99_s'])}) vs in-process `run` p50 {_ms(r['inprocess_p50_s'])}: overhead "
                     f"**{_ms(r['overhead_s'])}** (target <= {_ms(r['overhead_target_s'])}: {_met(ok)}; "
                     f"{_ms(r.get('overhead_best_block_s'))} between the quietest blocks; {r['calls']} calls each, "
                     f"alternating blocks; load average {r.get('load_average', 'n/a')})")
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_report", description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", type=Path, help="pytest-benchmark JSON (default: newest under .benchmarks/)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--write", action="store_true",
                       help=f"write the tracked {DEFAULT_OUT.relative_to(RESULTS.parents[1])}")
    where.add_argument("--out", type=Path, help="markdown file to write (default: print only)")
    args = parser.parse_args(argv)
    out = DEFAULT_OUT if args.write else args.out
    source = args.json or find_latest()
    data = load(source)
    lines = serve_section(data)
    if not lines:
        raise ReportError(f"{source} holds no serving results; run `pytest benchmarks/bench_serve.py "
                                 "--benchmark-only --benchmark-autosave` first")
    text = "\n".join(["# Serving benchmarks", "",
                      f"Measured {data.get('datetime', '?')[:19].replace('T', ' ')} UTC on {machine_line(data)}; "
                      f"source `{source.name}`.", "", *lines[2:]])
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text + "\n")
        tmp.replace(out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
