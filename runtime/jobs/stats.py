"""Per-channel statistics and top-k images of feature maps, in one pass, as mergeable partials.

    s = runtime.stats(model, images, k=9)          # or Stats(...).update(...) per batch, then a.merge(b)
    s.write("stats/")

The folder (read by viz's gallery; schema "featuremaps.stats/1"):
    stats.json       model, artifacts_sha256 (of manifest.json), images, k, threshold, input {shape, dtype},
                     outputs {name: {layer, shape [H,W,C], channels [{index, mean, std, max, min,
                     zero_fraction, dead, nearly_dead}], histogram {edges [bins+1], counts [C][bins]},
                     topk "topk/<name>.npz"}}, sources "sources.json" or null
    topk/<name>.npz  index [C,k] int64 (-1: fewer than k images), value [C,k] float32 (spatial max, descending;
                     ties: lower row first), maps [C,k,H,W] float32, images [C,k,Hin,Win,Cin] (pixels as given)
    sources.json     a JSON list, one input name per row (a file name, or "file.npz:key[i]"); any file name
                     survives (older folders have sources.txt, one name per line: still read)
Readers validate it all as untrusted input: runtime.artifacts.stats_folder.
"dead": never above threshold anywhere; "nearly_dead": above it on fewer than 1% of images.

Every partial holds O(channels x (bins + k x map size)) numbers, whatever the number of images,
and merging two partials over disjoint rows gives exactly what one pass over both gives:
sums are float64, the histogram's range only grows by doubling (bins nest exactly), and top-k
ranks by (value descending, row ascending).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from runtime.artifacts.atomic import atomic_dir
from runtime.artifacts.hashing import MANIFEST, sha256_file
from runtime.artifacts.manifest import Manifest
from runtime.artifacts.paths import safe_name
from runtime.artifacts.stats_folder import SCHEMA, SOURCES_JSON, STATS_JSON
from runtime.errors import DataError, InputError, TargetChanged
from runtime.jobs.histogram import Histogram
from runtime.jobs.stats_graph import recompute_top_maps, stats_graph
from runtime.preprocess import as_nhwc, to_batch

NEARLY_DEAD = 0.01  # active on fewer than 1% of images
WIDE = 1024  # values per row of OutputStats' wide view (see _add_block)
BLOCK = 1 << 18  # values per block of OutputStats.update: 1 MB of float32, about the L2 cache of one core


def feature_map_outputs(manifest: Manifest) -> list[str]:
    """The exposed feature-map outputs (rank-4 NHWC), in manifest order."""
    return [o.name for o in manifest.outputs if o.role == "feature_map" and len(o.shape) == 4 and o.layout == "NHWC"]


class OutputStats:
    """Running statistics of one [N, H, W, C] output: per channel sums, extremes, counts, histogram, top-k."""

    def __init__(self, shape: tuple, k: int, bins: int, threshold: float):
        self.shape = tuple(int(d) for d in shape)  # (H, W, C)
        c = self.shape[2]
        self.k, self.threshold, self.values = k, float(threshold), 0  # values per channel seen
        self.sum, self.sumsq = np.zeros(c), np.zeros(c)
        self.max, self.min = np.full(c, -np.inf, np.float32), np.full(c, np.inf, np.float32)
        self.zeros, self.active = np.zeros(c, np.int64), np.zeros(c, np.int64)
        self.histogram = Histogram(c, bins)
        self.top_value = np.full((c, k), -np.inf, np.float32)
        self.top_index = np.full((c, k), -1, np.int64)
        self.top_maps = np.zeros((c, k, *self.shape[:2]), np.float32)
        self.top_images: np.ndarray | None = None  # [C, k, Hin, Win, Cin], dtype of the first images seen
        self.maps_pending = False  # winners' maps not kept (stats graph): Stats.finish recomputes them
        positions = self.shape[0] * self.shape[1]  # positions per row of the wide view: a divisor of H x W
        self.width = max(d for d in range(1, positions + 1) if positions % d == 0 and (d == 1 or d * c <= WIDE))

    def update(self, start: int, maps: np.ndarray, images: np.ndarray) -> None:
        n, c = len(maps), self.shape[2]
        if not n:
            return
        # A few images at a time: the seven passes over a block then hit the CPU caches (the
        # histogram alone measured 50 instead of 90-120 us per image on a 256-image batch).
        per_block = max(1, BLOCK // (self.shape[0] * self.shape[1] * c))
        spatial_max = np.concatenate([self._add_block(maps[i:i + per_block]) for i in range(0, n, per_block)])
        self.active += np.count_nonzero(spatial_max > self.threshold, axis=0)
        # Top-k of this batch first (cheap, [C, n]), then only those k maps are gathered.
        value, index = spatial_max.T, np.broadcast_to(np.arange(start, start + n), (c, n))
        order = np.lexsort((index, -value), axis=-1)[:, :self.k]
        rows = order  # row within the batch
        channel = np.arange(c)[:, None]
        self._keep(np.take_along_axis(value, order, -1), np.take_along_axis(index, order, -1),
                   maps[rows, :, :, channel], images[rows])

    def add_partial(self, start: int, partial, images: np.ndarray) -> None:
        """Add a batch's runtime.jobs.stats_graph.Partial (the maps stayed in onnxruntime); winners' maps later."""
        n, c = len(partial.max), self.shape[2]
        if not n:
            return
        self.values += n * self.shape[0] * self.shape[1]
        self.sum += np.add.reduce(partial.sum, axis=0)
        self.sumsq += np.add.reduce(partial.sumsq, axis=0)
        self.zeros += partial.zeros.sum(axis=0)
        np.minimum(self.min, partial.min.min(axis=0), out=self.min)
        np.maximum(self.max, partial.max.max(axis=0), out=self.max)
        self.histogram.merge(partial.histogram)
        self.active += np.count_nonzero(partial.max > self.threshold, axis=0)
        value, index = partial.max.T, np.broadcast_to(np.arange(start, start + n), (c, n))
        order = np.lexsort((index, -value), axis=-1)[:, :self.k]
        self.maps_pending = True
        self._keep(np.take_along_axis(value, order, -1), np.take_along_axis(index, order, -1), None, images[order])

    def _add_block(self, maps: np.ndarray) -> np.ndarray:
        """Add the sums, extremes, zero counts and histogram of [n, H, W, C] maps; returns their [n, C] spatial max."""
        n, c = len(maps), self.shape[2]
        # Every reduction over positions runs on the wide view: numpy reduces along axis 0 with an
        # inner loop over the last one, and C floats per inner loop (32 on the reference model)
        # measured 2-5x slower than the ~800 here. Partials are then folded per channel.
        rows = maps.reshape(-1, self.width * c)
        self.values += n * self.shape[0] * self.shape[1]
        self.sum += _fold(np.add.reduce(rows, axis=0, dtype=np.float64), c, np.add)
        self.sumsq += _fold(np.einsum("ij,ij->j", rows, rows, dtype=np.float64), c, np.add)
        self.zeros += n * self.shape[0] * self.shape[1] - _fold(np.add.reduce(rows != 0, axis=0, dtype=np.intp), c,
                                                                np.add)
        channel_min = _fold(rows.min(axis=0), c, np.minimum)
        np.minimum(self.min, channel_min, out=self.min)
        spatial_max = maps.reshape(n, -1, self.width * c).max(axis=1).reshape(n, self.width, c).max(axis=1)
        channel_max = spatial_max.max(axis=0)
        np.maximum(self.max, channel_max, out=self.max)
        self.histogram.add(rows, float(channel_min.min()), float(channel_max.max()))
        return spatial_max

    def merge(self, other: "OutputStats") -> None:
        self.values += other.values
        self.sum += other.sum
        self.sumsq += other.sumsq
        np.minimum(self.min, other.min, out=self.min)
        np.maximum(self.max, other.max, out=self.max)
        self.zeros += other.zeros
        self.active += other.active
        self.histogram.merge(other.histogram)
        if other.top_images is not None:
            self.maps_pending = self.maps_pending or other.maps_pending
            self._keep(other.top_value, other.top_index, None if self.maps_pending else other.top_maps,
                       other.top_images)

    def _keep(self, value, index, maps, images) -> None:
        """Keep the k best of the current winners and these candidates ([C, m] each; maps [C, m, H, W])."""
        if self.top_images is None:
            self.top_images = np.zeros((*self.top_value.shape, *images.shape[2:]), images.dtype)
        value = np.concatenate([self.top_value, value], axis=1)
        index = np.concatenate([self.top_index, index], axis=1)
        order = np.lexsort((np.where(index < 0, np.iinfo(np.int64).max, index), -value), axis=-1)[:, :self.k]
        channel = np.arange(len(value))[:, None]
        if maps is not None:  # else (maps_pending) they are recomputed at the end
            self.top_maps = np.concatenate([self.top_maps, maps], axis=1)[channel, order]
        self.top_images = np.concatenate([self.top_images, images], axis=1)[channel, order]
        self.top_value, self.top_index = value[channel, order], index[channel, order]

    def channels(self, images: int) -> list[dict]:
        n = max(self.values, 1)
        mean = self.sum / n
        std = np.sqrt(np.maximum(self.sumsq / n - mean * mean, 0.0))
        empty = self.values == 0  # no images: no extremes (JSON has no infinities)
        return [{"index": c, "mean": float(mean[c]), "std": float(std[c]),
                 "max": None if empty else float(self.max[c]), "min": None if empty else float(self.min[c]),
                 "zero_fraction": float(self.zeros[c] / n),
                 "dead": bool(self.active[c] == 0), "nearly_dead": bool(self.active[c] < NEARLY_DEAD * images)}
                for c in range(self.shape[2])]


class Stats:
    """Statistics of the feature-map outputs over the rows seen so far; merge() partials over disjoint rows."""

    def __init__(self, manifest: Manifest, outputs: Iterable[str] | None = None, k: int = 9, bins: int = 64,
                 threshold: float = 0.0, artifacts_sha256: str = ""):
        names = list(outputs) if outputs is not None else feature_map_outputs(manifest)
        maps = feature_map_outputs(manifest)
        wrong = [n for n in names if n not in maps]
        if wrong or not names:
            other = [f"{o.name} ({o.layout})" for o in manifest.outputs if o.role == "feature_map"
                     and o.name not in maps]
            this = f"; this model's {', '.join(other)} are not covered (read them with runtime run)" if other else ""
            raise InputError(f"statistics cover 2-D feature maps of images (rank-4 NHWC); got {wrong or names}; "
                             f"available: {maps}{this}")
        if manifest.input.free_axes:
            raise InputError(f"statistics need one input size, and these artifacts take any size along "
                             f"{manifest.input.free_axes}; re-export the model with a fixed input shape for them")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer; got {k!r}")
        self.manifest, self.k, self.bins, self.threshold = manifest, k, bins, float(threshold)
        self.artifacts_sha256 = artifacts_sha256
        self.outputs = {safe_name(n): OutputStats(manifest.output(n).shape[1:], k, bins, threshold) for n in names}
        self.images = 0
        self.ranges: list[tuple[int, int]] = []  # rows seen, to refuse overlapping merges
        self.sources: dict[int, str] = {}
        self.input_dtype: np.dtype | None = None

    def update(self, start: int, images: np.ndarray, maps: dict[str, np.ndarray], names: list[str] | None = None):
        """Add rows start .. start+len(images): their raw images and the model's outputs for them."""
        images = self._as_stored(as_nhwc(images, self.manifest.input))
        for name, stats in self.outputs.items():
            stats.update(start, maps[name], images)
        self._add_rows(start, len(images), names)
        return self

    def add(self, start: int, images: np.ndarray, partials: dict, names: list[str] | None = None) -> "Stats":
        """Add rows start .. start+len(images): their raw images and the stats graph's partials for them."""
        images = self._as_stored(as_nhwc(images, self.manifest.input))
        for name, stats in self.outputs.items():
            stats.add_partial(start, partials[name], images)
        self._add_rows(start, len(images), names)
        return self

    def finish(self, model) -> "Stats":
        """Recompute the winners' maps that the stats graph did not keep (a few images per channel); returns self."""
        by_safe = {safe_name(n): n for n in self.manifest.output_names}
        for name, stats in self.outputs.items():
            if stats.maps_pending:
                recompute_top_maps(stats, model, by_safe[name])
        return self

    def merge(self, other: "Stats") -> "Stats":
        """Add another partial over other rows (in place); returns self."""
        if (other.k, other.bins, other.threshold, list(other.outputs)) != (self.k, self.bins, self.threshold,
                                                                          list(self.outputs)):
            raise InputError("cannot merge statistics taken with different k, bins, threshold or outputs")
        for a, b in self.ranges:
            for c, d in other.ranges:
                if a < d and c < b:
                    raise InputError(f"cannot merge statistics of overlapping rows {a}..{b - 1} and {c}..{d - 1}")
        if self.input_dtype is None:
            self.input_dtype = other.input_dtype
        elif other.input_dtype is not None and other.input_dtype != self.input_dtype:
            self._promote()
            other._promote()
        for name, stats in self.outputs.items():
            stats.merge(other.outputs[name])
        self.images += other.images
        self.ranges = _coalesce(self.ranges + other.ranges)
        self.sources.update(other.sources)
        return self

    def _as_stored(self, images: np.ndarray) -> np.ndarray:
        """Images in one dtype for all rows: as given, or preprocessed float32 once pixels and floats meet."""
        if self.input_dtype is None:
            self.input_dtype = images.dtype
        if images.dtype == self.input_dtype:
            return images
        self._promote()
        return to_batch(images, self.manifest.input)

    def _promote(self) -> None:
        """Keep winners' images as preprocessed float32 from now on."""
        for stats in self.outputs.values():
            t = stats.top_images
            if t is not None and t.dtype != np.float32:
                stats.top_images = to_batch(t.reshape(-1, *t.shape[2:]), self.manifest.input).reshape(t.shape)
        self.input_dtype = np.dtype(np.float32)

    def _add_rows(self, start: int, count: int, names: list[str] | None) -> None:
        self.images += count
        if count:
            self.ranges = _coalesce(self.ranges + [(start, start + count)])
        if names is not None:
            self.sources.update(zip(range(start, start + count), names))

    def to_json(self) -> dict:
        """stats.json's content (see the module docstring for the format)."""
        src = self.manifest.source_model
        return {
            "schema": SCHEMA, "model": src.get("name", ""), "artifacts_sha256": self.artifacts_sha256,
            "images": self.images, "k": self.k, "threshold": self.threshold,
            "input": {"shape": list(self.manifest.input.image_shape),
                      "dtype": str(self.input_dtype) if self.input_dtype is not None else "uint8"},
            "outputs": {name: {"layer": self.manifest.output(name).layer, "shape": list(s.shape),
                               "channels": s.channels(self.images),
                               "histogram": {"edges": s.histogram.edges.tolist(),
                                             "counts": s.histogram.counts.tolist()},
                               "topk": f"topk/{name}.npz"} for name, s in self.outputs.items()},
            "sources": SOURCES_JSON if self._has_all_sources() else None,
        }

    def _has_all_sources(self) -> bool:
        return self.images > 0 and len(self.sources) == self.images

    def write(self, folder: str | os.PathLike) -> Path:
        """Write the stats folder atomically: built beside it, renamed on success (replacing an older one).

        Raises:
            DataError: folder exists and is not a stats folder, or cannot be written.
        """
        folder = check_out(folder)

        def still_stats(old: Path) -> None:  # checked again once moved aside: only a stats folder is replaced
            if old.is_symlink() or not (old / STATS_JSON).is_file():
                raise DataError(f"{str(folder)!r} is no longer a stats folder (another program replaced it while "
                                "the stats were written); left it as it is")

        try:
            with atomic_dir(folder, replaceable=still_stats) as tmp:
                (tmp / "topk").mkdir()
                for name, s in self.outputs.items():
                    np.savez(tmp / "topk" / f"{name}.npz", index=s.top_index, value=s.top_value, maps=s.top_maps,
                             images=s.top_images if s.top_images is not None
                             else np.zeros((*s.top_value.shape, *self.manifest.input.image_shape), np.uint8))
                if self._has_all_sources():
                    (tmp / SOURCES_JSON).write_text(json.dumps([self.sources[i] for i in sorted(self.sources)]))
                (tmp / STATS_JSON).write_text(json.dumps(self.to_json(), indent=1))
        except OSError as exc:
            raise DataError(f"cannot write {str(folder)!r}: {exc.strerror or exc}") from None
        except TargetChanged as exc:
            raise DataError(str(exc)) from None
        return folder


def check_out(folder: str | os.PathLike) -> Path:
    """A stats folder to write: new, or an older stats folder (replaced); never anything else.

    Raises:
        DataError: folder exists and is not a stats folder, or its parent folder does not exist.
    """
    folder = Path(folder)
    if folder.exists() and not (folder.is_dir() and not folder.is_symlink() and (folder / STATS_JSON).is_file()):
        raise DataError(f"`out` {str(folder)!r} exists and is not a stats folder; refusing to replace it")
    if not folder.parent.is_dir():
        raise DataError(f"`out` {str(folder)!r}: folder {str(folder.parent)!r} does not exist")
    return folder


def _fold(partial: np.ndarray, channels: int, ufunc) -> np.ndarray:
    """Per-channel totals of a wide row's partials (column j: channel j % channels)."""
    return ufunc.reduce(partial.reshape(-1, channels), axis=0)


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted [start, stop) ranges with touching ones joined."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out


def stats(model, images, k: int = 9, bins: int = 64, threshold: float = 0.0, outputs: Iterable[str] | None = None,
          batch_size: int = 256, sources: list[str] | None = None, start: int = 0, progress: bool = False,
          engine: str = "auto") -> Stats:
    """Per-channel statistics and top-k of a model's feature maps over images, in one bounded-memory pass.

    Args:
        model: a loaded runtime.Model, or an artifacts folder (loaded with the onnx backend).
        images: an array of images ([N,H,W] or [N,H,W,C], uint8 pixels or preprocessed floats; a
            memory-mapped array is read one batch at a time), or an iterable of runtime.jobs.sources.Batch.
        k, bins, threshold: top-k size, histogram bins (a power of two), the "dead" threshold.
        outputs: feature-map outputs to cover (default: all of them).
        sources: one name per row of an array input (e.g. file names), written to sources.json.
        start: the row number of an array's first image (for partials over parts of a data set).
        progress: show a progress bar on stderr (when it is a terminal).
        engine: "graph" (reductions inside onnxruntime, runtime.jobs.stats_graph), "numpy", or "auto" (the
            graph on a GPU); the results are the same.

    Returns:
        a Stats; .write(folder) writes it, .merge(other) adds another partial.
    """
    from runtime.api import load
    from runtime.jobs.progress import progress_bar
    from runtime.jobs.sources import Batch

    if not hasattr(model, "run"):
        with load(model) as loaded:
            return stats(loaded, images, k, bins, threshold, outputs, batch_size, sources, start, progress, engine)
    result = Stats(model.manifest, outputs, k, bins, threshold, sha256_file(Path(model.folder) / MANIFEST))
    if isinstance(images, np.ndarray):
        array = as_nhwc(images, model.input_spec)  # a view: a memory-mapped array stays on disk
        total = len(array)
        if sources is not None and len(sources) != total:
            raise InputError(f"sources must name every image: got {len(sources)} names for {total} images")
        images = (Batch(start + i, array[i:i + batch_size], sources[i:i + batch_size] if sources else None)
                  for i in range(0, total, batch_size))
    else:
        total = None
    names = list(result.outputs)
    graph = stats_graph(model, names, bins, engine)
    with progress_bar(total, quiet=not progress) as bar:
        for batch in images:
            if graph is not None:
                result.add(batch.start, batch.images, graph.run(batch.images), batch.names)
            else:
                result.update(batch.start, batch.images, model.run(batch.images, names), batch.names)
            bar.update(len(batch.images))
    return result.finish(model)


__all__ = ["stats", "Stats", "OutputStats", "Histogram", "feature_map_outputs", "SCHEMA"]
