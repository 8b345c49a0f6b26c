"""`python -m viz gallery STATS --out site/`: a static "microscope" site of what every channel responds to.

Reads the folder `runtime stats` writes (stats.json + topk/*.npz, schema featuremaps.stats/1) and
writes a site that opens from file:// without a server:

    site/index.html            one row per layer: channels, dead / nearly dead, activation histogram
    site/layers/<output>.html  every channel: its top-k images with the map overlaid and beside
                               them, mean, std, zero fraction, max; dead channels flagged
    site/img/<output>/c<i>.png one PNG per channel (k overlays over k maps), written once
    site/gallery.css

The site is built in a temporary folder beside --out and renamed into place when complete.
Needs numpy and Pillow only (no TensorFlow, no onnxruntime).
"""
from __future__ import annotations

import html
import math
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from runtime.artifacts.atomic import build_dir, replace_dir
from runtime.artifacts.budgets import MAX_MEMBER_BYTES
from runtime.artifacts.stats_folder import read_stats, read_topk
from runtime.errors import DataError, TargetChanged

MARKER = ".featuremaps-gallery"  # marks a folder this command wrote: the only kind --force replaces
CSS = Path(__file__).parent / "static" / "gallery.css"
MIN_TILE_PX = 96  # each top-k tile is drawn at least this wide; the strips fill the page's width beyond that
OVERLAY = np.array([255, 96, 0], np.float32)  # the map's colour over the image
CHANNEL_FIELDS = ("mean", "std", "max", "min", "zero_fraction", "dead", "nearly_dead")


def write_gallery(stats_folder: str | Path, out: str | Path, force: bool = False,
                  max_member_bytes: int = MAX_MEMBER_BYTES) -> Path:
    """Build the site for a stats folder into `out`, atomically.

    Args:
        stats_folder: the output of `python -m runtime stats`.
        out: the site folder; an existing one is replaced only with force, and only if it is a
            gallery this function wrote (or an empty folder).
        max_member_bytes: the decoding budget of each top-k .npz member (checked from its header).

    Returns:
        the site folder.

    Raises:
        DataError: no stats folder, or an `out` that exists (without force) or is not a gallery.
        ArtifactError: a stats folder that does not follow its schema (runtime.artifacts.stats_folder).
    """
    stats = read_stats(stats_folder)  # validated like a manifest (ArtifactError), every file read once
    stats["folder"] = Path(stats_folder)
    out = Path(out)
    _check_target(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        build = build_dir(out)
    except OSError as exc:
        raise DataError(f"cannot write the site into {str(out.parent)!r}: {exc.strerror}") from None
    try:
        _build_site(stats, build, max_member_bytes)
        replace_dir(build, out, replaceable=_replaceable(out, force))
    except OSError as exc:  # e.g. a full disk: nothing half-written stays
        raise DataError(f"cannot write the site {str(out)!r}: {exc.strerror or exc}") from None
    except TargetChanged as exc:
        raise DataError(str(exc)) from None
    finally:
        if build.exists():
            shutil.rmtree(build)
    return out


def _check_target(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"--out {out} exists and is not a folder")
    if any(out.iterdir()) and not (out / MARKER).is_file():
        raise DataError(f"--out {out} holds files that no gallery wrote; choose a new or empty folder")
    if any(out.iterdir()) and not force:
        raise DataError(f"--out {out} already holds a gallery; pass --force to replace it")


def _replaceable(out: Path, force: bool) -> Callable[[Path], None]:
    """What replace_dir checks once an existing out is moved aside: still what _check_target accepted (an
    empty folder, or with force a gallery), so that nothing written there meanwhile is deleted."""
    def check(old: Path) -> None:
        if any(old.iterdir()) and not (force and (old / MARKER).is_file()):
            raise DataError(f"{str(out)!r} changed while the site was built (another program wrote into it); "
                            "left it as it is")
    return check


def _build_site(stats: dict, site: Path, max_member_bytes: int = MAX_MEMBER_BYTES) -> None:
    (site / "layers").mkdir()
    shutil.copyfile(CSS, site / "gallery.css")
    for name, out in stats["outputs"].items():
        topk = read_topk(stats["folder"], stats, name, max_member_bytes)
        folder = site / "img" / name
        folder.mkdir(parents=True)
        for c in range(len(out["channels"])):
            _save_png(channel_strip(topk["images"][c], topk["maps"][c], topk["index"][c]), folder / f"c{c}.png")
        (site / "layers" / f"{name}.html").write_text(layer_page(stats, name, out, topk))
    (site / "index.html").write_text(index_page(stats))
    (site / MARKER).write_text("written by `python -m viz gallery`; --force may replace this folder\n")


# ---- images -------------------------------------------------------------------------------------

def channel_strip(images: np.ndarray, maps: np.ndarray, index: np.ndarray) -> np.ndarray:
    """One channel's top-k as RGB uint8: row 1 each image with the map overlaid, row 2 the map alone.

    Maps are scaled by the channel's largest value over its top-k (so the k tiles compare) and
    centred on the image at an integer zoom (which lines a valid-padding conv stack's maps up with
    the pixels they see); image slots without an image (index -1) stay blank.
    """
    k, hin, win = images.shape[:3]
    valid = index >= 0
    top = float(maps[valid].max()) if valid.any() else 0.0
    low = min(0.0, float(maps[valid].min())) if valid.any() else 0.0
    strip = np.full((2 * hin + 1, k * (win + 1) - 1, 3), 255, np.uint8)
    for j in np.flatnonzero(valid):
        scaled = (maps[j] - low) / (top - low) if top > low else np.zeros_like(maps[j])
        heat = _centred(np.clip(scaled, 0.0, 1.0), hin, win)[..., None]
        base = _as_rgb(images[j]).astype(np.float32) * 0.7
        x0 = j * (win + 1)
        strip[:hin, x0:x0 + win] = np.rint(base * (1 - heat) + OVERLAY * heat).astype(np.uint8)
        strip[hin + 1:, x0:x0 + win] = np.rint(heat * 255).astype(np.uint8)
    return strip


def _centred(m: np.ndarray, hin: int, win: int) -> np.ndarray:
    """A map on an hin x win canvas: enlarged by the largest integer factor that fits, centred."""
    h, w = m.shape
    zoom = min(hin // h, win // w)
    if zoom >= 1:
        m = m.repeat(zoom, axis=0).repeat(zoom, axis=1)
    else:  # a map larger than the image: shrink it to fit (nearest)
        rows = np.arange(hin) * h // hin
        cols = np.arange(win) * w // win
        m = m[rows][:, cols]
    canvas = np.zeros((hin, win), np.float32)
    top, left = (hin - m.shape[0]) // 2, (win - m.shape[1]) // 2
    canvas[top:top + m.shape[0], left:left + m.shape[1]] = m
    return canvas


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """An input image as given (uint8 pixels, or floats of any range) -> RGB uint8 for display."""
    x = np.asarray(image)
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        lo, hi = float(x.min()), float(x.max())
        x = np.rint((x - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)).astype(np.uint8)
    if x.shape[-1] != 3:
        x = np.repeat(np.rint(x.mean(axis=-1, keepdims=True)).astype(np.uint8), 3, axis=-1)
    return x


def _save_png(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(rgb, "RGB").save(path, optimize=True)


def histogram_svg(counts, edges, width: int = 160, height: int = 36) -> str:
    """Inline SVG bars of a histogram, log-scaled counts (ReLU maps are mostly zeros)."""
    counts = np.log1p(np.asarray(counts, dtype=np.float64))
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    bar = width / max(1, len(counts))
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 0.3, 0.5):.1f}" height="{h:.1f}"/>'
        for i, h in enumerate(counts / top * height) if h > 0
    )
    title = f"activation histogram, log counts, {edges[0]:.3g} to {edges[-1]:.3g}"
    return (f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
            f"<title>{html.escape(title)}</title>{rects}</svg>")


# ---- pages ----------------------------------------------------------------------------------------

def _page(title: str, body: str, root: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f'<link rel="stylesheet" href="{root}gallery.css"></head>\n<body>{body}</body></html>\n')


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _percent(fraction: float) -> str:
    text = f"{fraction:.1%}"
    return ">99.9%" if text == "100.0%" and fraction < 1 else text  # a rare activation is not "100% zeros"


def _summary(out: dict) -> tuple[int, int, float]:
    chans = out["channels"]
    dead = sum(bool(c["dead"]) for c in chans)
    nearly = sum(bool(c["nearly_dead"]) and not c["dead"] for c in chans)
    return dead, nearly, float(np.mean([c["zero_fraction"] for c in chans]))


def index_page(stats: dict) -> str:
    rows = []
    for name, out in stats["outputs"].items():
        h, w, c = out["shape"]
        dead, nearly, zero = _summary(out)
        layer_counts = np.asarray(out["histogram"]["counts"]).sum(axis=0)
        flag = ' class="has-dead"' if dead else ""
        rows.append(
            f'<tr{flag}><td><a href="layers/{name}.html">{html.escape(name)}</a>'
            f'<div class="muted">{html.escape(str(out.get("layer", name)))}</div></td>'
            f"<td>{c}</td><td>{h}×{w}</td><td>{dead}{_links(name, out, 'dead')}</td>"
            f"<td>{nearly}{_links(name, out, 'nearly_dead')}</td><td>{_percent(zero)}</td>"
            f'<td>{histogram_svg(layer_counts, out["histogram"]["edges"])}</td></tr>')
    head = ("<tr><th>layer</th><th>channels</th><th>map size</th><th>dead</th><th>nearly dead</th>"
            "<th>zeros</th><th>activations (log)</th></tr>")
    body = (f"<header><h1>Microscope: {html.escape(str(stats.get('model', '')))}</h1>"
            f"<p>{_about(stats)}</p></header>"
            f'<main><table class="layers">{head}{"".join(rows)}</table></main>')
    return _page(f"Microscope: {stats.get('model', '')}", body, "")


def _links(name: str, out: dict, flag: str, most: int = 8) -> str:
    """Links to the first flagged channels of a layer (a nearly dead channel that is dead counts once)."""
    hits = [i for i, c in enumerate(out["channels"]) if c[flag] and (flag == "dead" or not c["dead"])]
    links = " ".join(f'<a href="layers/{name}.html#c{i}">c{i}</a>' for i in hits[:most])
    more = f" +{len(hits) - most}" if len(hits) > most else ""
    return f' <span class="muted">{links}{more}</span>' if hits else ""


def _about(stats: dict) -> str:
    return (f"Top {stats['k']} of {stats['images']:,} images per channel, ranked by the channel's largest "
            f"activation. Dead: never above {html.escape(str(stats.get('threshold', 0)))} on any image; "
            "nearly dead: above it on fewer than 1% of images.")


def layer_page(stats: dict, name: str, out: dict, topk: dict) -> str:
    h, w, c = out["shape"]
    hin, win = topk["images"].shape[2:4]
    dead, nearly, _ = _summary(out)
    edges = out["histogram"]["edges"]
    cards = []
    for ch, rec in enumerate(out["channels"]):
        badge, cls = "", "channel"
        if rec["dead"]:
            badge, cls = '<span class="badge dead">dead</span>', "channel dead"
        elif rec["nearly_dead"]:
            badge, cls = '<span class="badge nearly">nearly dead</span>', "channel nearly-dead"
        zoom = math.ceil(MIN_TILE_PX / win)  # CSS upscaling (pixelated): the PNGs stay native, the site small
        strip_w, strip_h = zoom * (stats["k"] * (win + 1) - 1), zoom * (2 * hin + 1)
        values = "".join(
            f'<li title="{html.escape(_source(stats, int(i)))}">{_fmt(v)}</li>' if i >= 0 else "<li></li>"
            for i, v in zip(topk["index"][ch], topk["value"][ch]))
        cards.append(
            f'<section class="{cls}" id="c{ch}"><div class="meta"><h2>channel {ch} {badge}</h2>'
            f'<dl><dt>mean</dt><dd>{_fmt(rec["mean"])}</dd><dt>std</dt><dd>{_fmt(rec["std"])}</dd>'
            f'<dt>zeros</dt><dd>{_percent(rec["zero_fraction"])}</dd><dt>max</dt><dd>{_fmt(rec["max"])}</dd>'
            f'<dt>min</dt><dd>{_fmt(rec["min"])}</dd></dl>'
            f'{histogram_svg(out["histogram"]["counts"][ch], edges, 120, 28)}</div>'
            f'<figure style="min-width: {MIN_TILE_PX * stats["k"]}px">'
            f'<img src="../img/{name}/c{ch}.png" width="{strip_w}" height="{strip_h}" loading="lazy" '
            f'alt="channel {ch}: top {stats["k"]} images with the map overlaid, and the maps">'
            f'<ol class="topk">{values}</ol></figure></section>')
    body = (f'<header><a href="../index.html">← all layers</a><h1>{html.escape(name)}</h1>'
            f"<p>{c} channels, maps {h}×{w} · {dead} dead · {nearly} nearly dead. "
            f"Each channel: its top {stats['k']} images with the map overlaid (top row) and the map alone "
            f"(bottom row, centred at an integer zoom), scaled by the channel's largest value; numbers are "
            f"each image's maximum.</p></header>"
            f'<main>{"".join(cards)}</main>')
    return _page(f"{name}: microscope", body, "../")


def _source(stats: dict, i: int) -> str:
    names = stats["source_names"]
    return names[i] if names and 0 <= i < len(names) else f"image #{i}"


def site_size(site: Path) -> tuple[int, int]:
    """(files, bytes) of a site folder."""
    files = [p for p in site.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


__all__ = ["write_gallery", "channel_strip", "histogram_svg", "index_page", "layer_page", "site_size"]
