"""The serving section of the benchmark report: results of benchmarks/bench_serve.py (issue 12 targets)."""
from __future__ import annotations


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f} ms"


def _us(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:.0f} us"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def serve_section(data: dict) -> list[str]:
    """Markdown lines for the serve_load and serve_single entries of a pytest-benchmark JSON (none: [])."""
    infos = [b.get("extra_info", {}) for b in data.get("benchmarks", [])]
    loads = [i for i in infos if i.get("kind") == "serve_load"]
    singles = [i for i in infos if i.get("kind") == "serve_single"]
    if not loads and not singles:
        return []
    lines = ["## Serving: Open Inference Protocol over loopback HTTP (issue 12 targets)", ""]
    if loads:
        lines += ["| clients x images per request | images/s served | in-process Model.stream at the formed batch | "
                  "ratio (target >= 0.6x) | mean formed batch | p50 / p99 latency | errors | server RSS start -> end "
                  "(max) | CPU per image: server / clients / in-process | load average |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(loads, key=lambda r: r.get("images_per_request", 1)):
            mb = 1024 * 1024
            rss = (f"{r['rss_start_bytes'] / mb:.1f} -> {r['rss_end_bytes'] / mb:.1f} ({r['rss_max_bytes'] / mb:.1f}) MB"
                   if r.get("rss_start_bytes") else "n/a")
            lines.append(
                f"| {r['clients']} x {r.get('images_per_request', 1)} | {r['images_per_s']:,.0f} | "
                f"{r['inprocess_images_per_s']:,.0f} (batch {r['inprocess_batch']}) | **{r['ratio']:.2f}x** "
                f"({_met(r['ratio'] >= r['ratio_target'])}) | {r['mean_batch']:.1f} | {_ms(r['p50_s'])} / "
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
