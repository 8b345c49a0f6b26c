"""Reading a stats folder (`runtime stats` writes it, viz's gallery reads it) as untrusted input, like a manifest.

    stats = read_stats("stats/")            # stats.json validated: schema, types, ranges, sizes
    topk = read_topk("stats/", stats, name)   # one output's top-k arrays, headers checked before loading

Every file is opened once, relative to the folder's descriptor without following symbolic links
(paths.open_inside), and read from that descriptor: nothing can be swapped between a check and the
use. stats.json is at most MAX_JSON_BYTES; every field has its type and range checked; .npz members
are checked from their zip entry and .npy header (name, dtype, shape, declared size against
`max_member_bytes`) before a byte of data is decoded, never with pickles. Any failure is one line of
ArtifactError. The format is described at the top of runtime/jobs/stats.py.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from runtime.artifacts.budgets import MAX_MEMBER_BYTES, over
from runtime.artifacts.paths import open_inside, read_inside, relative_path, safe_name
from runtime.errors import ArtifactError, DataError

SCHEMA = "featuremaps.stats/1"
STATS_JSON = "stats.json"
SOURCES_JSON = "sources.json"  # a JSON list of names, one per row: any file name survives
LEGACY_SOURCES = "sources.txt"  # older folders: one name per line ("\n"-terminated; newlines were blanked)
MAX_JSON_BYTES = 256 << 20
MAX_DIM = 1 << 16  # any one dimension (H, W, C, k, bins)
INPUT_DTYPES = ("uint8", "float32")
TOPK_MEMBERS = ("index", "value", "maps", "images")


def read_stats(folder: str | os.PathLike) -> dict:
    """stats.json of a stats folder, validated; adds "source_names" (a list, or None).

    Raises:
        DataError: no such folder, or no stats.json in it.
        ArtifactError: anything in it that does not follow the schema, a symbolic link, an oversized file.
    """
    folder = Path(folder)
    raw = _read(folder, STATS_JSON, MAX_JSON_BYTES)
    try:
        stats = json.loads(raw, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{STATS_JSON} in {str(folder)!r} is not valid JSON: {_one_line(exc)}") from None
    _check(stats)
    stats["source_names"] = _sources(folder, stats.get("sources"), stats["images"])
    return stats


def read_topk(folder: str | os.PathLike, stats: dict, name: str,
              max_member_bytes: int = MAX_MEMBER_BYTES) -> dict[str, np.ndarray]:
    """The top-k arrays of output `name` (index, value, maps, images), each checked before it is decoded.

    Raises:
        ArtifactError: a missing or unexpected member, a wrong dtype or shape, a member over
            `max_member_bytes`, corrupt data.
    """
    out, k = stats["outputs"][name], stats["k"]
    h, w, c = out["shape"]
    expected = {"index": ((c, k), ("int64",)), "value": ((c, k), ("float32",)),
                "maps": ((c, k, h, w), ("float32",)), "images": ((c, k, *stats["input"]["shape"]), INPUT_DTYPES)}
    rel = out["topk"]
    try:
        fd = open_inside(folder, rel, "top-k file")
    except FileNotFoundError:
        raise ArtifactError(f"top-k file {rel!r} listed in {STATS_JSON} is missing from {str(folder)!r}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read top-k file {rel!r}: {exc.strerror or exc}") from None
    arrays = {}
    try:
        with os.fdopen(fd, "rb") as f, zipfile.ZipFile(f) as archive:
            members = {i.filename: i for i in archive.infolist()}
            for key, (shape, dtypes) in expected.items():
                info = members.get(f"{key}.npy")
                if info is None:
                    raise ArtifactError(f"top-k file {rel!r} lacks {key}; expected members {list(TOPK_MEMBERS)}")
                need = math.prod(shape) * np.dtype(dtypes[0] if key != "images" else "float32").itemsize
                if info.file_size > max_member_bytes:
                    raise ArtifactError(over(f"top-k member {rel}:{key}", info.file_size, "max_member_bytes",
                                             max_member_bytes, "bytes"))
                if info.file_size > need + 4096:  # a header is at most a few hundred bytes
                    raise ArtifactError(f"top-k member {rel}:{key} declares {info.file_size:,} bytes; "
                                        f"expected at most {need + 4096:,} for shape {list(shape)}")
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    got_shape, fortran, dtype = read_header(member)
                    if tuple(got_shape) != shape or str(dtype) not in dtypes or fortran:
                        raise ArtifactError(f"top-k member {rel}:{key} is {dtype} {list(got_shape)}; expected "
                                            f"{' or '.join(dtypes)} {list(shape)}")
                    data = member.read(math.prod(shape) * dtype.itemsize + 1)
                if len(data) != math.prod(shape) * dtype.itemsize:
                    raise ArtifactError(f"top-k member {rel}:{key} holds {len(data):,} bytes of data; expected "
                                        f"{math.prod(shape) * dtype.itemsize:,}")
                arrays[key] = np.frombuffer(data, dtype).reshape(shape)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, NotImplementedError) as exc:
        raise ArtifactError(f"cannot read top-k file {rel!r}: {_one_line(exc)}") from None
    if np.any((arrays["index"] < -1)) or not np.all(np.isfinite(arrays["maps"])):
        raise ArtifactError(f"top-k file {rel!r}: indexes below -1 or maps that are not finite")
    return arrays


def _read(folder: Path, rel: str, limit: int) -> bytes:
    try:
        return read_inside(folder, rel, limit, f"{rel} of the stats folder")
    except FileNotFoundError:
        state = "does not exist" if not os.path.lexists(folder) else f"holds no {rel}"
        raise DataError(f"stats folder {str(folder)!r} {state} (expected the output of `python -m runtime stats`)") \
            from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {rel} in {str(folder)!r}: {exc.strerror or exc}") from None


def _sources(folder: Path, rel, images: int) -> list[str] | None:
    if rel is None:
        return None
    raw = _read(folder, rel, MAX_JSON_BYTES)
    try:
        text = raw.decode("utf-8")
        names = json.loads(text) if rel.endswith(".json") else text.split("\n")[:-1]
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"sources file {rel!r} is not valid: {_one_line(exc)}") from None
    if not isinstance(names, list) or len(names) != images or not all(isinstance(n, str) for n in names):
        raise ArtifactError(f"sources file {rel!r}: expected a list of {images} names (one per image)")
    return names


def _check(stats) -> None:
    """Validate stats.json's content in place (ArtifactError naming the first wrong field)."""
    _expect(isinstance(stats, dict) and stats.get("schema") == SCHEMA, "schema", f"{SCHEMA!r}",
            stats.get("schema") if isinstance(stats, dict) else stats)
    _text(stats.get("model", ""), "model")
    _expect(isinstance(stats.get("artifacts_sha256", ""), str), "artifacts_sha256", "a string",
            stats.get("artifacts_sha256"))
    images, k = stats.get("images"), stats.get("k")
    _int(images, "images", 0, 1 << 62)
    _int(k, "k", 1, MAX_DIM)
    _number(stats.get("threshold"), "threshold")
    inp = stats.get("input")
    _expect(isinstance(inp, dict), "input", "an object", inp)
    _shape(inp.get("shape"), "input.shape")
    _expect(inp.get("dtype") in INPUT_DTYPES, "input.dtype", f"one of {list(INPUT_DTYPES)}", inp.get("dtype"))
    outputs = stats.get("outputs")
    _expect(isinstance(outputs, dict) and outputs, "outputs", "a non-empty object", outputs)
    for name, out in outputs.items():
        safe_name(name)
        where = f"outputs.{name}"
        _expect(isinstance(out, dict), where, "an object", out)
        _text(out.get("layer", ""), f"{where}.layer")
        _shape(out.get("shape"), f"{where}.shape")
        channels = out["shape"][2]
        _channels(out.get("channels"), channels, f"{where}.channels")
        _histogram(out.get("histogram"), channels, f"{where}.histogram")
        _expect(isinstance(out.get("topk"), str), f"{where}.topk", "a path", out.get("topk"))
        relative_path(out["topk"], f"{where}.topk")
    sources = stats.get("sources")
    _expect(sources is None or sources in (SOURCES_JSON, LEGACY_SOURCES), "sources",
            f"null, {SOURCES_JSON!r} or {LEGACY_SOURCES!r}", sources)


def _channels(records, count: int, where: str) -> None:
    _expect(isinstance(records, list) and len(records) == count, where, f"a list of {count} records", records)
    for i, rec in enumerate(records):
        at = f"{where}[{i}]"
        _expect(isinstance(rec, dict), at, "an object", rec)
        _expect(rec.get("index", i) == i and not isinstance(rec.get("index", i), bool), f"{at}.index", str(i),
                rec.get("index"))
        for key in ("mean", "std", "zero_fraction"):
            _number(rec.get(key), f"{at}.{key}")
        _expect(rec["std"] >= 0 and 0 <= rec["zero_fraction"] <= 1, at, "std >= 0 and zero_fraction in [0, 1]",
                (rec["std"], rec["zero_fraction"]))
        for key in ("max", "min"):
            if rec.get(key) is not None:
                _number(rec.get(key), f"{at}.{key}")
        for key in ("dead", "nearly_dead"):
            _expect(isinstance(rec.get(key), bool), f"{at}.{key}", "true or false", rec.get(key))


def _histogram(hist, channels: int, where: str) -> None:
    _expect(isinstance(hist, dict), where, "an object", hist)
    edges, counts = hist.get("edges"), hist.get("counts")
    _expect(isinstance(edges, list) and 2 <= len(edges) <= MAX_DIM + 1, f"{where}.edges", "a list of bins + 1 numbers",
            edges)
    for e in edges:
        _number(e, f"{where}.edges")
    _expect(all(a < b for a, b in zip(edges, edges[1:])), f"{where}.edges", "increasing numbers", edges)
    bins = len(edges) - 1
    _expect(isinstance(counts, list) and len(counts) == channels, f"{where}.counts", f"{channels} lists", counts)
    for row in counts:
        _expect(isinstance(row, list) and len(row) == bins and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in row),
            f"{where}.counts", f"lists of {bins} non-negative integers", row)


def _expect(ok, where: str, expected: str, got) -> None:
    if not ok:
        shown = repr(got)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ArtifactError(f"{STATS_JSON}: {where} is {shown}; expected {expected}")


def _int(value, where: str, low: int, high: int) -> None:
    _expect(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high, where,
            f"an integer in [{low}, {high}]", value)


def _number(value, where: str) -> None:
    _expect(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), where,
            "a finite number", value)


def _text(value, where: str) -> None:
    _expect(isinstance(value, str) and len(value) <= 1024, where, "a string of at most 1024 characters", value)


def _shape(shape, where: str) -> None:
    _expect(isinstance(shape, list) and len(shape) == 3 and all(
        isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_DIM for d in shape), where,
        f"[H, W, C] of integers in [1, {MAX_DIM}]", shape)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


__all__ = ["read_stats", "read_topk", "SCHEMA", "STATS_JSON", "SOURCES_JSON", "LEGACY_SOURCES", "MAX_JSON_BYTES"]
