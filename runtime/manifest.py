"""The artifact manifest: its schema, how it is written, and how it is read and checked.

One schema, versioned. Readers check `schema_version` and every file's sha256
before trusting anything else in the artifacts folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .errors import ArtifactError
from .hashing import MANIFEST, sha256_file, tree_files

SCHEMA_VERSION = 1
ONNX_FILE = "model.onnx"
ONNX_DATA_FILE = "model.onnx.data"  # ONNX external data beside ONNX_FILE, for graphs over 2 GB
SAVED_MODEL_DIR = "saved_model"
SIGNATURE = "serving_default"
INPUT_NAME = "image"

# Layout of an output by rank, for channels-last layers (Keras' default).
LAYOUTS = {2: "NC", 3: "NWC", 4: "NHWC", 5: "NDHWC"}


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become the model input: x * scale + offset, applied to integer pixels."""

    raw_dtype: str = "uint8"
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    reason: str = ""  # why this preprocessing was chosen, for people reading the manifest

    @cached_property  # read on every run(): computed once
    def value_range(self) -> tuple[float, float]:
        """The range the model input takes when raw pixels span 0..255."""
        ends = sorted((self.offset, 255.0 * self.scale + self.offset))
        return ends[0], ends[1]


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str
    shape: tuple  # (None, H, W, C): batch dimension dynamic
    layout: str
    preprocessing: Preprocessing

    @cached_property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.shape[1:])


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
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        version = d.get("schema_version") if isinstance(d, dict) else None
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"manifest schema_version is {version!r}; this runtime reads version {SCHEMA_VERSION}"
                " (re-export the model with this version of featuremaps)"
            )
        try:
            inp = dict(d["input"])
            inp["shape"] = tuple(inp["shape"])
            inp["preprocessing"] = Preprocessing(**inp["preprocessing"])
            outputs = [OutputSpec(**{**o, "shape": tuple(o["shape"])}) for o in d["outputs"]]
            rest = {k: v for k, v in d.items() if k not in ("input", "outputs")}
            return cls(input=InputSpec(**inp), outputs=outputs, **rest)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"manifest does not follow schema version {SCHEMA_VERSION}: {exc!r}") from None

    def write(self, folder: Path) -> Path:
        """Write manifest.json into folder, replacing any previous one atomically."""
        path = Path(folder) / MANIFEST
        with atomic_write(path, "w") as f:
            f.write(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def read_manifest(folder: str | os.PathLike, verify_files: bool = True) -> Manifest:
    """Read and check the manifest of an artifacts folder.

    Raises:
        ArtifactError: folder or manifest missing, unreadable, of another schema version,
            or (with verify_files) any listed artifact file missing or with a wrong sha256.
            Files not listed are ignored: the loaders read only listed files.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise ArtifactError(f"artifacts folder {str(folder)!r} {state} (expected the output of `python -m export`)")
    if not path.is_file():
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise ArtifactError(f"no {MANIFEST} in {str(folder)!r}; found {found or 'nothing'}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not readable JSON: {exc}") from None
    manifest = Manifest.from_dict(data)
    if verify_files:
        verify_files_against(manifest, folder)
    return manifest


def verify_files_against(manifest: Manifest, folder: Path, only: list[str] | None = None) -> None:
    """Check that the listed artifact files exist with the recorded sha256.

    Args:
        only: check only files whose path starts with one of these prefixes (e.g. the ONNX
            file alone when only the ONNX backend is used); all files when None.
    """
    if not manifest.files or not isinstance(manifest.files, dict):
        raise ArtifactError(f"{folder / MANIFEST} lists no artifact files: cannot check integrity")
    for prefix in only or ():
        if not any(_under(rel, prefix) for rel in manifest.files):
            raise ArtifactError(f"{folder / MANIFEST} lists no sha256 for {prefix!r}: cannot check integrity")
    for rel, meta in manifest.files.items():
        if only is not None and not any(_under(rel, p) for p in only):
            continue
        if not isinstance(meta, dict) or not {"bytes", "sha256"} <= meta.keys():
            raise ArtifactError(f"{folder / MANIFEST}: entry {rel!r} of 'files' lacks 'bytes' and 'sha256'")
        path = folder / rel
        if not path.is_file():
            raise ArtifactError(f"artifact file {rel!r} listed in the manifest is missing from {str(folder)!r}")
        if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            raise ArtifactError(
                f"artifact file {rel!r} does not match the manifest's sha256 (tampered or truncated); re-export it"
            )


def _under(rel: str, prefix: str) -> bool:
    """rel is prefix, a file in the folder prefix, or the ONNX external data that belongs to prefix."""
    return rel == prefix or rel.startswith(prefix + "/") or (prefix == ONNX_FILE and rel == ONNX_DATA_FILE)


__all__ = [
    "SCHEMA_VERSION", "ONNX_FILE", "ONNX_DATA_FILE", "SAVED_MODEL_DIR", "SIGNATURE", "INPUT_NAME", "LAYOUTS", "MANIFEST",
    "Preprocessing", "InputSpec", "OutputSpec", "Manifest", "read_manifest", "verify_files_against", "tree_files",
]
