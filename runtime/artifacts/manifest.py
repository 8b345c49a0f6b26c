"""The artifact manifest: its schema, how it is written, and how it is read and checked.

One schema, versioned. Readers check `schema_version` and every file's sha256
before trusting anything else in the artifacts folder.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from runtime.artifacts.atomic import atomic_write
from runtime.artifacts.hashing import MANIFEST, file_error, file_state, tree_files
from runtime.artifacts.paths import confine, open_inside, relative_path, safe_name
from runtime.errors import ArtifactError

# Version 2: inputs of rank 3-6 (layouts NWC ... NTDHWC), integer input dtypes, raw_dtype "float32" (values taken
# as given), free dimensions (null: any size). Version-1 manifests (float32 NHWC images from uint8 pixels) are read.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
ONNX_FILE = "model.onnx"
ONNX_DATA_FILE = "model.onnx.data"  # ONNX external data beside ONNX_FILE, for graphs over 2 GB
SAVED_MODEL_DIR = "saved_model"
SIGNATURE = "serving_default"
INPUT_NAME = "image"

# Layout of an output by rank, for channels-last layers (Keras' default).
LAYOUTS = {2: "NC", 3: "NWC", 4: "NHWC", 5: "NDHWC"}
# Inputs: 1-D, 2-D, 3-D, and frames of them (T: a time axis, as TimeDistributed takes).
INPUT_LAYOUTS = ("NWC", "NHWC", "NDHWC", "NTWC", "NTHWC", "NTDHWC")
INPUT_DTYPES = ("float32", "uint8", "int8", "uint16", "int16", "int32")
# raw_dtype "uint8": raw pixels, x * scale + offset; "float32": values taken as given (not a picture: no
# range); an integer input dtype: the model takes those integers as declared (scale 1, offset 0).
RAW_DTYPES = ("uint8", "float32", *INPUT_DTYPES[2:])
ROLES = ("model_output", "feature_map")

# Limits of a manifest read from an untrusted folder; real ones are far inside them.
MAX_MANIFEST_BYTES = 16 << 20
MAX_DEPTH = 32  # nesting of JSON objects and lists
MAX_DIM = 1 << 16  # any one dimension of an input or output shape
MAX_SCALE = 1e6  # |scale| and |offset| of the preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """How raw values become the model input: x * scale + offset for raw uint8 pixels; raw_dtype "float32" takes
    values as given (no pixel range), an integer raw_dtype passes those integers as the model declares them."""

    raw_dtype: str = "uint8"
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    reason: str = ""  # why this preprocessing was chosen, for people reading the manifest

    @cached_property  # read on every run(): computed once
    def value_range(self) -> tuple[float, float]:
        """The range the model input takes when raw pixels span 0..255 (unbounded for values taken as given)."""
        if self.raw_dtype != "uint8":
            return -math.inf, math.inf
        ends = sorted((self.offset, 255.0 * self.scale + self.offset))
        return ends[0], ends[1]


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str
    shape: tuple  # (None, H, W, C), (None, W, C), ...: batch dimension dynamic; None elsewhere: a free size
    layout: str  # one of INPUT_LAYOUTS
    preprocessing: Preprocessing

    @cached_property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one sample: (H, W, C) of an image, (W, C) of a signal, (D, H, W, C) of a volume or clip."""
        return tuple(self.shape[1:])

    @property
    def free_axes(self) -> str:
        """The axes whose size is free (any size the model accepts), e.g. "HW" for a fully convolutional net."""
        return "".join(a for a, d in zip(self.layout[1:], self.shape[1:]) if d is None)

    @property
    def is_image(self) -> bool:
        """Whether one sample is a 2-D image [H, W, C] (what the image helpers, the explorer and viz inputs draw)."""
        return self.layout == "NHWC"


@dataclass(frozen=True)
class OutputSpec:
    name: str
    layer: str
    layer_class: str
    shape: tuple  # (None, ...): batch dimension dynamic
    layout: str
    role: str  # "model_output" or "feature_map"


@dataclass
class Manifest:
    input: InputSpec
    outputs: list[OutputSpec]
    labels: list[str] = field(default_factory=list)
    source_model: dict = field(default_factory=dict)
    onnx: dict = field(default_factory=dict)
    tools: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    verification: dict = field(default_factory=dict)
    preview: dict = field(default_factory=dict)  # {"file", "output", "image"}: a grid PNG among the files
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def output(self, name: str) -> OutputSpec:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"]["shape"] = list(self.input.shape)
        for o in d["outputs"]:
            o["shape"] = list(o["shape"])
        return {"schema_version": d.pop("schema_version"), **d}

    @classmethod
    def from_dict(cls, d: Any) -> "Manifest":
        """A Manifest from parsed JSON, every field checked (see validate).

        Raises:
            ArtifactError: a field of the wrong type, range or form; one line naming the field.
        """
        validate(d)
        inp = dict(d["input"])
        inp["shape"] = tuple(inp["shape"])
        inp["preprocessing"] = Preprocessing(**inp["preprocessing"])
        outputs = [OutputSpec(**{**o, "shape": tuple(o["shape"])}) for o in d["outputs"]]
        rest = {k: v for k, v in d.items() if k not in ("input", "outputs")}
        return cls(input=InputSpec(**inp), outputs=outputs, **rest)

    def write(self, folder: Path) -> Path:
        """Write manifest.json into folder, replacing any previous one atomically.

        Raises:
            ArtifactError: the manifest does not follow the schema (e.g. an output name that is not safe).
        """
        data = self.to_dict()
        validate(data)  # what readers would refuse is never written
        path = Path(folder) / MANIFEST
        with atomic_write(path, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        return path


def read_manifest(folder: str | os.PathLike, verify_files: bool = True) -> Manifest:
    """Read and check the manifest of an artifacts folder: the whole schema, once, here.

    Raises:
        ArtifactError: folder or manifest missing, unreadable, larger than MAX_MANIFEST_BYTES, nested
            deeper than MAX_DEPTH, of another schema version or not following it, or (with verify_files)
            any listed artifact file missing or with a wrong sha256. Files not listed are ignored: the
            loaders read only listed files.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise ArtifactError(f"artifacts folder {str(folder)!r} {state} (expected the output of `python -m export`)")
    if not path.is_file():
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise ArtifactError(f"no {MANIFEST} in {str(folder)!r}; found {found or 'nothing'}")
    path = confine(folder, MANIFEST, "manifest")  # a link to a file elsewhere is not this folder's manifest
    try:
        with os.fdopen(open_inside(folder, MANIFEST, "manifest"), "rb") as f:  # no link followed, even one swapped in
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ArtifactError(f"{path} is not readable: {exc.strerror}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB; a manifest is a few kB")
    try:
        data = json.loads(raw.decode("utf-8"))  # NaN is allowed in reports; fields that matter are checked finite
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ArtifactError(f"{path} is not readable JSON: {exc}") from None
    except RecursionError:
        raise ArtifactError(f"{path} is nested deeper than {MAX_DEPTH} levels") from None
    manifest = Manifest.from_dict(data)
    if verify_files:
        verify_files_against(manifest, folder)
    return manifest


def verify_files_against(manifest: Manifest, folder: Path, only: list[str] | None = None) -> None:
    """Check that the listed artifact files exist with the recorded sha256.

    Loaders do not call this: they read each file once with hashing.read_verified / copy_verified and
    load those bytes, so that no file can be swapped between the check and the load.

    Args:
        only: check only files whose path starts with one of these prefixes (e.g. the ONNX
            file alone when only the ONNX backend is used); all files when None.
    """
    for rel in listed_files(manifest, folder, only):
        state = file_state(folder, rel, manifest.files[rel])
        if state != "ok":
            raise file_error(state, folder, rel)


def listed_files(manifest: Manifest, folder: Path, only: list[str] | None = None) -> list[str]:
    """The listed files under the prefixes `only` (all when None).

    Raises:
        ArtifactError: the manifest lists no files, or none under one of the prefixes.
    """
    if not manifest.files:
        raise ArtifactError(f"{folder / MANIFEST} lists no artifact files: cannot check integrity")
    for prefix in only or ():
        if not any(belongs_to(rel, prefix) for rel in manifest.files):
            raise ArtifactError(f"{folder / MANIFEST} lists no sha256 for {prefix!r}: cannot check integrity")
    return [rel for rel in manifest.files if only is None or any(belongs_to(rel, p) for p in only)]


def unlisted_files(folder: Path, manifest: Manifest) -> list[str]:
    """Entries under folder that are neither manifest.json nor listed files (symbolic links count as unlisted)."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink() or (name in files and rel != MANIFEST and rel not in manifest.files):
                found.append(rel)
        dirs[:] = [d for d in dirs if not Path(root, d).is_symlink()]
    return sorted(found)


# --- validation: the whole schema, checked once when a manifest is read ------------------------------

_FIELDS = {"schema_version", "input", "outputs", "labels", "source_model", "onnx", "tools", "files",
           "verification", "preview", "created"}
_INPUT_FIELDS = {"name", "dtype", "shape", "layout", "preprocessing"}
_PRE_FIELDS = {"raw_dtype", "scale", "offset", "reason"}
_OUTPUT_FIELDS = {"name", "layer", "layer_class", "shape", "layout", "role"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LAYOUT = re.compile(r"[A-Za-z0-9]{1,16}")


def validate(d: Any) -> None:
    """Check parsed manifest JSON against the schema: every field's type and range, finite numbers,
    safe and unique output names, confined file paths.

    Raises:
        ArtifactError: one line naming the first field that is wrong, what was expected and what was found.
    """
    version = d.get("schema_version") if isinstance(d, dict) else None
    if type(version) is not int or version not in READABLE_VERSIONS:  # bool is an int: True is not version 1
        raise ArtifactError(
            f"manifest schema_version is {version!r}; this runtime reads version {SCHEMA_VERSION}"
            f" (and {', '.join(map(str, READABLE_VERSIONS[:-1]))}; re-export the model with this version of "
            "featuremaps)"
        )
    _check_depth(d)
    _keys(d, "manifest", _FIELDS, required={"schema_version", "input", "outputs"})
    inp = _of(d["input"], dict, "input", "an object")
    _keys(inp, "input", _INPUT_FIELDS, required=_INPUT_FIELDS)
    _expect(inp["name"] == INPUT_NAME, "input.name", f"{INPUT_NAME!r}", inp["name"])
    v1 = version == 1  # version 1: float32 NHWC images from uint8 pixels only
    dtypes, layouts, raws = (("float32",), ("NHWC",), ("uint8",)) if v1 else (INPUT_DTYPES, INPUT_LAYOUTS, RAW_DTYPES)
    _expect(inp["dtype"] in dtypes, "input.dtype", f"one of {list(dtypes)}", inp["dtype"])
    _expect(inp["layout"] in layouts, "input.layout", f"one of {list(layouts)}", inp["layout"])
    _shape(inp["shape"], "input.shape", ranks=(len(inp["layout"]),), free=not v1)
    _expect(v1 or inp["shape"][-1] is not None, "input.shape", "a fixed channel count", inp["shape"])
    pre = _of(inp["preprocessing"], dict, "input.preprocessing", "an object")
    _keys(pre, "input.preprocessing", _PRE_FIELDS, required=set())
    raw = pre.get("raw_dtype", "uint8")
    _expect(raw in raws and raw in ("uint8", "float32", inp["dtype"]), "input.preprocessing.raw_dtype",
            f"one of {list(raws)}, an integer one only as the input dtype", raw)
    for key in ("scale", "offset"):
        if key in pre:
            _number(pre[key], f"input.preprocessing.{key}", nonzero=key == "scale")
    _expect(raw == "uint8" or (pre.get("scale"), pre.get("offset", 0)) == (1, 0), "input.preprocessing",
            "scale 1 and offset 0 unless raw_dtype is 'uint8'", pre)
    _text(pre.get("reason", ""), "input.preprocessing.reason", empty=True)
    outputs = _of(d["outputs"], list, "outputs", "a non-empty list")
    _expect(0 < len(outputs) <= 100_000, "outputs", "a list of 1 to 100000 outputs", f"{len(outputs)} entries")
    seen: set[str] = set()
    for i, o in enumerate(outputs):
        where = f"outputs[{i}]"
        _keys(_of(o, dict, where, "an object"), where, _OUTPUT_FIELDS, required=_OUTPUT_FIELDS)
        safe_name(o["name"], f"{MANIFEST}: {where}.name")
        _expect(o["name"] not in seen, f"{where}.name", "a name used once", o["name"])
        seen.add(o["name"])
        for key in ("layer", "layer_class"):
            _text(o[key], f"{where}.{key}")
        _shape(o["shape"], f"{where}.shape", ranks=range(2, 9), free=not v1)
        _expect(isinstance(o["layout"], str) and _LAYOUT.fullmatch(o["layout"]), f"{where}.layout",
                "1-16 letters or digits", o["layout"])
        _expect(o["role"] in ROLES, f"{where}.role", f"one of {list(ROLES)}", o["role"])
    for i, label in enumerate(_of(d.get("labels", []), list, "labels", "a list of strings")):
        _text(label, f"labels[{i}]")
    for key in ("source_model", "onnx", "tools", "verification", "preview"):
        _of(d.get(key, {}), dict, key, "an object")
    _text(d.get("created", ""), "created", empty=True)
    files = _of(d.get("files", {}), dict, "files", "an object of path -> {sha256, bytes}")
    for rel, meta in files.items():
        relative_path(rel, f"{MANIFEST}: files entry")
        _expect(rel != MANIFEST, "files", f"entries other than {MANIFEST}", rel)
        _expect(isinstance(meta, dict) and set(meta) == {"bytes", "sha256"}, f"files[{rel!r}]",
                "an object with exactly 'bytes' and 'sha256'", meta)
        _expect(isinstance(meta["sha256"], str) and _SHA256.fullmatch(meta["sha256"]), f"files[{rel!r}].sha256",
                "64 lowercase hex digits", meta["sha256"])
        _expect(type(meta["bytes"]) is int and 0 <= meta["bytes"] < 1 << 50, f"files[{rel!r}].bytes",
                "a byte count", meta["bytes"])
    external = _of(d.get("onnx", {}).get("external_data", []), list, "onnx.external_data", "a list of listed files")
    for rel in external:
        _expect(isinstance(rel, str) and rel in files and rel != ONNX_FILE, "onnx.external_data",
                "files listed in 'files' besides model.onnx", rel)
    if "file" in d.get("preview", {}):
        relative_path(d["preview"]["file"], f"{MANIFEST}: preview.file")


def _expect(ok: Any, where: str, expected: str, got: Any) -> None:
    if not ok:
        text = repr(got)
        text = text if len(text) <= 60 else text[:57] + "..."
        raise ArtifactError(f"{MANIFEST} does not follow schema version {SCHEMA_VERSION}: {where} must be {expected};"
                            f" got {text}")


def _of(value: Any, kind: type, where: str, expected: str) -> Any:
    _expect(isinstance(value, kind), where, expected, value)
    return value


def _keys(d: dict, where: str, allowed: set, required: set) -> None:
    unknown, missing = sorted(set(d) - allowed), sorted(required - set(d))
    _expect(not unknown, where, f"an object with fields {sorted(allowed)}", f"unknown field(s) {unknown}")
    _expect(not missing, where, f"an object with fields {sorted(allowed)}", f"missing field(s) {missing}")


def _shape(shape: Any, where: str, ranks, free: bool = False) -> None:
    expected = f"[null, d1, ...] of rank {'/'.join(map(str, ranks)) if len(ranks) < 3 else f'{ranks[0]}-{ranks[-1]}'}" \
               f" with dimensions 1..{MAX_DIM}{' or null (free)' if free else ''}"
    _expect(isinstance(shape, list) and len(shape) in ranks and shape[0] is None
            and all((type(n) is int and 0 < n <= MAX_DIM) or (free and n is None) for n in shape[1:]), where,
            expected, shape)


def _number(value: Any, where: str, nonzero: bool = False) -> None:
    ok = type(value) in (int, float) and math.isfinite(value) and abs(value) <= MAX_SCALE and (value or not nonzero)
    _expect(ok, where, f"a finite {'non-zero ' if nonzero else ''}number within +-{MAX_SCALE:g}", value)


def _text(value: Any, where: str, empty: bool = False) -> None:
    _expect(isinstance(value, str) and (empty or value) and len(value) <= 1024, where,
            "a string of up to 1024 characters", value)


def _check_depth(d: Any) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH, without recursion (the walk itself must not overflow)."""
    stack = [(d, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if children and depth > MAX_DEPTH:
            raise ArtifactError(f"{MANIFEST} is nested deeper than {MAX_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children)


def belongs_to(rel: str, prefix: str) -> bool:
    """rel is prefix, a file in the folder prefix, or the ONNX external data that belongs to prefix."""
    return rel == prefix or rel.startswith(prefix + "/") or (prefix == ONNX_FILE and rel == ONNX_DATA_FILE)


__all__ = [
    "SCHEMA_VERSION", "READABLE_VERSIONS", "INPUT_LAYOUTS", "INPUT_DTYPES", "RAW_DTYPES", "belongs_to",
    "ONNX_FILE", "ONNX_DATA_FILE", "SAVED_MODEL_DIR", "SIGNATURE", "INPUT_NAME",
    "LAYOUTS", "MANIFEST",
    "Preprocessing", "InputSpec", "OutputSpec", "Manifest", "read_manifest", "verify_files_against", "tree_files",
    "listed_files", "unlisted_files", "validate", "MAX_MANIFEST_BYTES", "MAX_DEPTH",
]
