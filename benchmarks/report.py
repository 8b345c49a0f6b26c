"""Saved pytest-benchmark JSON -> a markdown report and a bar chart of images per second.

    python -m benchmarks.report [JSON] [--out DIR]

JSON defaults to the newest *.json under .benchmarks/ (where --benchmark-autosave writes);
DIR defaults to a new folder benchmark-report-<date>-<time of the run>/ here, so that the tracked
benchmarks/results/ changes only when named. Writes DIR/benchmarks.md and DIR/benchmarks.png and
prints the markdown.

Conventions: a call's time is the median over its rounds; images/s = images per call / median.
A ratio of two times is flagged as noise, with no target verdict, when the run cannot support it:
its median-based and best-round-based values disagree in sign, or the two interquartile ranges
(q1..q3 of the rounds) overlap.
Model FLOPs per image are counted from the ONNX graph (benchmarks/flops.py: multiply-adds x 2 in
Conv and Dense layers); the machine's peak is the best round of a float32 numpy matmul measured in
the same run, so achieved GFLOP/s and its fraction of peak compare numbers from one run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from benchmarks.report_json import ReportError, find_latest, load, machine_line
from benchmarks.serve_report import serve_section
from runtime.cli.args import ArgumentParser
from runtime.cli.process import run_cli

MD, PNG = "benchmarks.md", "benchmarks.png"

# Display order and labels of the approaches of benchmarks/bench_backends.py.
APPROACHES = {
    "seed_predict": "seed: keras Model.predict on a sub-model",
    "keras_call": "Keras sub-model called directly",
    "runtime_tf": "runtime, tf backend (SavedModel)",
    "runtime_onnx": "runtime, onnx backend",
    "bare_ort": "bare onnxruntime session (runtime's SessionOptions)",
    "bare_ort_default": "bare onnxruntime session (default SessionOptions)",
    "keras_call_gpu": "Keras sub-model called directly, GPU",
    "runtime_tf_gpu": "runtime, tf backend, GPU",
    "runtime_onnx_gpu": "runtime, onnx backend, GPU",
    "bare_ort_gpu": "bare onnxruntime session, CUDA",
}
# Targets at batch 1: the onnx wrapper adds at most 10% to a bare session; speed-ups over the seed approach.
OVERHEAD_MAX = 0.10
SPEEDUP_MIN = {"runtime_onnx": 300.0, "runtime_tf": 20.0}


@dataclass
class Result:
    approach: str
    batch: int
    device: str
    median: float
    mean: float
    min: float
    rounds: int
    flops_per_image: int | None
    q1: float = 0.0
    q3: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median


def backend_results(data: dict) -> list[Result]:
    """The bench_backends results: one per (approach, batch size)."""
    out = []
    for b in data["benchmarks"]:
        info, stats = b.get("extra_info", {}), b["stats"]
        if info.get("approach") in APPROACHES and info.get("images"):
            out.append(Result(info["approach"], int(info["images"]), info.get("device", "cpu"), stats["median"],
                              stats["mean"], stats["min"], stats["rounds"], info.get("model_flops_per_image"),
                              stats.get("q1", stats["median"]), stats.get("q3", stats["median"])))
    order = list(APPROACHES)
    return sorted(out, key=lambda r: (order.index(r.approach), r.batch))


def matmul_peak(data: dict) -> tuple[float, dict] | None:
    """(GFLOP/s of the best matmul round over the sizes measured, its extra_info), or None when not measured."""
    found = [(b["extra_info"]["flops"] / b["stats"]["min"] / 1e9, b["extra_info"]) for b in data["benchmarks"]
             if b.get("extra_info", {}).get("approach") == "numpy_matmul_f32" and b["extra_info"].get("flops")]
    return max(found, key=lambda f: f[0]) if found else None


def ab_overhead(data: dict) -> dict | None:
    for b in data["benchmarks"]:
        if b.get("extra_info", {}).get("kind") == "ab_overhead":
            return b["extra_info"]
    return None


def _time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def noise(median_ratio: float, best_ratio: float, a: Result | None = None, b: Result | None = None) -> str | None:
    """Why a ratio of two timings is meaningless in this run, or None when the run supports it."""
    if (median_ratio > 1) != (best_ratio > 1):
        return (f"median and best rounds disagree ({median_ratio - 1:+.1%} vs {best_ratio - 1:+.1%}): the spread of "
                "the rounds is larger than the difference; rerun on an idle machine")
    if a and b and a.q1 < b.q3 and b.q1 < a.q3:
        return (f"the interquartile ranges overlap ({_time(a.q1)}..{_time(a.q3)} vs {_time(b.q1)}..{_time(b.q3)}): "
                "the difference is within the run's spread")
    return None


def _verdict(ok: bool, target: str | None, why_noisy: str | None) -> str:
    """'; target T: met', or why the run cannot tell; '' for a ratio without a target in a quiet run."""
    if why_noisy:
        return f"; **not meaningful**: {why_noisy}" + (f"; target {target}: not decided" if target else "")
    return f"; target {target}: {'met' if ok else 'NOT met'}" if target else ""


def ratios(results: list[Result], ab: dict | None) -> list[str]:
    """The batch-1 targets, computed from this run, each with a warning when the run is too noisy to tell."""
    one = {r.approach: r for r in results if r.batch == 1}
    lines = []

    def overhead(a: str, b: str, label: str, target: bool) -> None:
        if a in one and b in one:
            ra, rb = one[a], one[b]
            pct = ra.median / rb.median - 1
            why = noise(ra.median / rb.median, ra.min / rb.min, ra, rb)
            mark = _verdict(pct <= OVERHEAD_MAX, f"<= {OVERHEAD_MAX:.0%}" if target else None, why)
            lines.append(f"- onnx runtime wrapper overhead vs {label}: **{pct:+.1%}** "
                         f"({_time(ra.median)} vs {_time(rb.median)} median; "
                         f"{ra.min / rb.min - 1:+.1%} on best rounds{mark})")

    overhead("runtime_onnx", "bare_ort", "bare onnxruntime session with the runtime's SessionOptions", True)
    overhead("runtime_onnx", "bare_ort_default", "bare session with default SessionOptions", False)
    if ab:
        v = ab["variants"]
        for kind, base, what in (("float", "float", "same float32 input"),
                                 ("float_unchecked", "float", "same float32 input, check_values=False"),
                                 ("pixels", "pixels", "both from uint8 pixels")):
            w, b = v.get(f"runtime_{kind}"), v.get(f"bare_{base}")
            if w and b:
                pct = w["median_s"] / b["median_s"] - 1
                why = noise(w["median_s"] / b["median_s"], w["min_s"] / b["min_s"])
                lines.append(f"- interleaved A/B, {what}: **{pct:+.1%}** ({_time(w['median_s'])} vs "
                             f"{_time(b['median_s'])} median of {w['blocks']} blocks of {ab['calls_per_block']} calls; "
                             f"{w['min_s'] / b['min_s'] - 1:+.1%} on best blocks"
                             f"{_verdict(pct <= OVERHEAD_MAX, f'<= {OVERHEAD_MAX:.0%}', why)})")
    seed = one.get("seed_predict")
    for approach, target in SPEEDUP_MIN.items():
        if seed and approach in one:
            r = one[approach]
            x = seed.median / r.median
            why = noise(seed.median / r.median, seed.min / r.min, seed, r)
            lines.append(f"- {APPROACHES[approach]} vs seed predict, one image: **{x:,.0f}x faster** "
                         f"({_time(r.median)} vs {_time(seed.median)}{_verdict(x >= target, f'>= {target:g}x', why)})")
    return lines


def efficiency(results: list[Result], peak: tuple[float, dict] | None) -> list[str]:
    flops = next((r.flops_per_image for r in results if r.flops_per_image), None)
    if not flops:
        return ["Model FLOPs per image not recorded in this JSON."]
    lines = [f"Model cost: {flops / 1e6:.3f} MFLOP per image (multiply-adds x 2 in Conv and Dense layers, "
             "counted from the ONNX graph by benchmarks/flops.py)."]
    if peak:
        gflops, info = peak
        lines.append(f"Machine peak: {gflops:.1f} GFLOP/s (float32 numpy matmul {info.get('n')}x{info.get('n')}, "
                     f"best round, same run); compute floor {flops / (gflops * 1e9) * 1e6:.1f} us per image.")
    lines += ["", "| batch | fastest approach | images/s | achieved GFLOP/s | fraction of peak |",
              "|---|---|---|---|---|"]
    for batch in sorted({r.batch for r in results}):
        best = max((r for r in results if r.batch == batch), key=lambda r: r.images_per_s)
        achieved = flops * best.images_per_s / 1e9
        frac = f"{achieved / peak[0]:.1%}" if peak else "n/a"
        lines.append(f"| {batch} | {best.approach} | {_rate(best.images_per_s)} | {achieved:.2f} | {frac} |")
    return lines


def other_groups(data: dict) -> list[str]:
    """Benchmarks of other suites (e.g. bench_viz.py), by group, relative to the fastest in the group."""
    groups: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("approach") in APPROACHES or info.get("approach") == "numpy_matmul_f32" or info.get("kind"):
            continue
        groups.setdefault(b.get("group") or "(no group)", []).append(b)
    if not groups:
        return []
    lines = ["## Other benchmarks in this run", "",
             "| group | benchmark | median | mean | rounds | vs fastest in group |", "|---|---|---|---|---|---|"]
    for group, items in groups.items():
        fastest = min(b["stats"]["median"] for b in items)
        for b in sorted(items, key=lambda b: b["stats"]["median"]):
            s = b["stats"]
            lines.append(f"| {group} | {b['name']} | {_time(s['median'])} | {_time(s['mean'])} | {s['rounds']} | "
                         f"{s['median'] / fastest:.1f}x |")
    return lines + [""]


def markdown(data: dict, source: Path, png_name: str | None = PNG) -> str:
    results = backend_results(data)
    batches = sorted({r.batch for r in results})
    approaches = [a for a in APPROACHES if any(r.approach == a for r in results)]
    by = {(r.approach, r.batch): r for r in results}
    lines = ["# Benchmarks: all feature maps of the reference MNIST CNN", "",
             f"Measured {data.get('datetime', '?')[:19].replace('T', ' ')} UTC on {machine_line(data)}.",
             f"Source: `{source.name}` (pytest-benchmark {data.get('version', '?')}). Times are medians over "
             "rounds; images/s = images per call / median time. Every approach returns every output "
             "(probabilities and both conv feature maps) as numpy arrays.", ""]
    if results:
        lines += ["## Images per second", "",
                  "| approach | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "|---|" + "---|" * len(batches)]
        for a in approaches:
            cells = [_rate(by[(a, b)].images_per_s) if (a, b) in by else "-" for b in batches]
            lines.append(f"| {APPROACHES[a]} | " + " | ".join(cells) + " |")
        lines += ["", "## Time per call", "",
                  "| approach | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "|---|" + "---|" * len(batches)]
        for a in approaches:
            cells = [f"{_time(by[(a, b)].median)} (mean {_time(by[(a, b)].mean)}, {by[(a, b)].rounds} rounds)"
                     if (a, b) in by else "-" for b in batches]
            lines.append(f"| {APPROACHES[a]} | " + " | ".join(cells) + " |")
        lines += ["", "## Single image, all outputs, CPU: targets", "", *ratios(results, ab_overhead(data)),
                  "", "## Compute efficiency", "", *efficiency(results, matmul_peak(data)), ""]
        skipped_gpu = not any(r.device == "gpu" for r in results)
        if skipped_gpu:
            lines += ["GPU variants: not measured (no GPU in this run; they show as skipped).", ""]
    else:
        lines += ["No bench_backends results in this JSON.", ""]
    lines += other_groups(data)
    lines += serve_section(data)  # benchmarks/bench_serve.py
    if png_name and results:
        lines += [f"![images per second per approach and batch size]({png_name})", ""]
    return "\n".join(lines)


def chart(data: dict, path: Path) -> Path | None:
    """Grouped bars: images/s per approach (bars) per batch size (groups), log scale."""
    results = backend_results(data)
    if not results:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    batches = sorted({r.batch for r in results})
    approaches = [a for a in APPROACHES if any(r.approach == a for r in results)]
    by = {(r.approach, r.batch): r for r in results}
    fig = Figure(figsize=(10, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(approaches)
    for i, a in enumerate(approaches):
        xs = [j + (i - (len(approaches) - 1) / 2) * width for j, b in enumerate(batches) if (a, b) in by]
        ys = [by[(a, b)].images_per_s for b in batches if (a, b) in by]
        bars = ax.bar(xs, ys, width, label=APPROACHES[a])
        ax.bar_label(bars, labels=[_rate(y) for y in ys], fontsize=6, rotation=90, padding=2)
    ax.set_yscale("log")
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("images per second (log scale)")
    ax.set_title(f"Reference MNIST CNN, all outputs\n{machine_line(data)}", fontsize=8)
    ax.margins(y=0.15)
    ax.grid(axis="y", which="major", alpha=0.3)
    fig.legend(fontsize=7, loc="outside lower center", ncols=3)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=120, format="png")
    os.replace(tmp, path)
    return path


def write_report(json_path: Path, out: Path) -> tuple[Path, Path | None, str]:
    """Write out/benchmarks.md and out/benchmarks.png from a benchmark JSON; returns (md, png or None, text)."""
    data = load(json_path)
    out.mkdir(parents=True, exist_ok=True)
    png = chart(data, out / PNG)
    text = markdown(data, Path(json_path), PNG if png else None)
    md = out / MD
    tmp = md.with_name(f".{md.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, md)
    return md, png, text


def default_out(data: dict) -> Path:
    """benchmark-report-<date>-<time>/ in the current folder, named after the run's start time."""
    stamp = "".join(c for c in data.get("datetime", "")[:19] if c.isdigit())
    return Path(f"benchmark-report-{stamp[:8]}-{stamp[8:]}" if len(stamp) == 14 else "benchmark-report")


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", type=Path, help="pytest-benchmark JSON (default: newest under .benchmarks/)")
    parser.add_argument("--out", type=Path, help="output folder (default: a new benchmark-report-<date>-<time>/ "
                                                 "here; pass benchmarks/results to update the tracked report)")
    args = parser.parse_args(argv)
    source = args.json or find_latest()
    if not source.is_file():
        raise ReportError(f"benchmark JSON {source} not found")
    md, png, text = write_report(source, args.out or default_out(load(source)))
    print(text)
    print(f"\nwrote {md}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
