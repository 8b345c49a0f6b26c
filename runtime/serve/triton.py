"""A Triton Inference Server model repository from the artifacts (`python -m runtime triton`: runtime/cli/triton.py).

write_repository writes out/NAME/config.pbtxt and out/NAME/1/model.onnx (platform onnxruntime_onnx, every
output of the manifest, dynamic batching, an instance group), built in a temporary folder beside
out/NAME and renamed into place: other models in out are never touched.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runtime.artifacts.atomic import atomic_dir
from runtime.artifacts.hashing import copy_verified
from runtime.artifacts.manifest import ONNX_FILE, Manifest, listed_files, read_manifest
from runtime.artifacts.paths import confine
from runtime.errors import DataError, TargetChanged, UsageError
from runtime.serve.server import model_name

CONFIG = "config.pbtxt"
VERSION = "1"
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}


@dataclass(frozen=True)
class TritonOptions:
    """The model's entry in the repository: its name, batching and instances.

    Raises:
        UsageError: max_batch < 1, instances < 1, max_delay_ms < 0 or kind not in KINDS.
    """

    name: str | None = None  # None: the model's name in the manifest
    max_batch: int = 64  # max_batch_size
    max_delay_ms: float = 0.0  # dynamic batching's max_queue_delay (0: Triton's default)
    instances: int = 1  # model instances per device
    kind: str = "auto"  # instance kind: gpu, cpu, or auto (GPUs when Triton has them)
    force: bool = False  # replace an existing out/NAME that holds a config.pbtxt

    def __post_init__(self):
        if self.max_batch < 1 or self.instances < 1 or self.max_delay_ms < 0 or self.kind not in KINDS:
            raise UsageError(f"expected `max_batch` >= 1, `instances` >= 1, `max_delay_ms` >= 0 and `kind` in "
                             f"{sorted(KINDS)}; got {self.max_batch}, {self.instances}, {self.max_delay_ms:g}, "
                             f"{self.kind!r}")


# The manifest's input dtypes as Triton names them.
TRITON_TYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "uint16": "TYPE_UINT16",
                "int16": "TYPE_INT16", "int32": "TYPE_INT32"}


def config_text(manifest: Manifest, name: str, options: TritonOptions | None = None) -> str:
    """config.pbtxt in protobuf text format (Triton's model_config.proto) for model `name`, from the manifest."""
    options = options or TritonOptions()

    def tensor(t) -> str:
        dims = ", ".join("-1" if d is None else str(int(d)) for d in t.shape[1:])  # without the batch
        kind = TRITON_TYPES[getattr(t, "dtype", "float32")]  # outputs are float32
        return f'  {{\n    name: "{t.name}"\n    data_type: {kind}\n    dims: [ {dims} ]\n  }}'

    return "\n".join([
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {options.max_batch}",
        "input [\n" + tensor(manifest.input) + "\n]",
        "output [\n" + ",\n".join(tensor(o) for o in manifest.outputs) + "\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {round(options.max_delay_ms * 1000)}\n}}",
        f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {KINDS[options.kind]}\n  }}\n]",
    ]) + "\n"


def write_repository(artifacts: str | os.PathLike, out: str | os.PathLike,
                     options: TritonOptions | None = None) -> Path:
    """Write out/NAME/{config.pbtxt, 1/model.onnx} atomically; return out/NAME.

    NAME is options.name, else the model's name in the manifest.

    Raises:
        ArtifactError: the artifacts' manifest or model.onnx is missing, or does not match its sha256.
        UsageError: a bad name, out is not a folder, or out/NAME exists (without force, or not a Triton model).
    """
    options = options or TritonOptions()
    artifacts, out = Path(artifacts), Path(out)
    manifest = read_manifest(artifacts, verify_files=False)
    name = model_name(manifest, options.name)
    onnx_files = listed_files(manifest, artifacts, only=[ONNX_FILE])  # model.onnx and its external data
    text = config_text(manifest, name, options)
    if out.exists() and not out.is_dir():
        raise UsageError(f"`out` {str(out)!r} exists and is not a folder; expected a model repository folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the model repository {str(out)!r}: {exc.strerror or exc}") from None
    target = confine(out, name, "model name")
    if target.exists() or target.is_symlink():
        if not options.force:
            raise UsageError(f"{str(target)!r} exists; pass `force=True` to replace it")
        if target.is_symlink() or not (target / CONFIG).is_file():
            raise UsageError(f"{str(target)!r} holds no {CONFIG}: not a Triton model, not replaced")

    try:
        _write_model(target, artifacts, manifest, onnx_files, text, options)
    except BaseException:
        if created:  # a repository folder made for this model alone goes with it (os.rmdir: only if still empty)
            try:
                os.rmdir(out)
            except OSError:
                pass
        raise
    return target


def _write_model(target: Path, artifacts: Path, manifest: Manifest, onnx_files: list[str], text: str,
                 options: TritonOptions) -> None:
    def still_a_model(old: Path) -> None:  # checked again once moved aside: only a Triton model is replaced
        if not (old / CONFIG).is_file():
            raise UsageError(f"{str(target)!r} holds no {CONFIG} any more (another program replaced it meanwhile): "
                             "not a Triton model, not replaced")

    try:
        with atomic_dir(target, replaceable=still_a_model if options.force else None) as tmp:
            (tmp / VERSION).mkdir()
            for rel in onnx_files:  # one descriptor per file (O_NOFOLLOW), the bytes copied hashed: no swap between
                copy_verified(artifacts, rel, manifest.files[rel], tmp / VERSION / rel)  # check and copy
            (tmp / CONFIG).write_text(text)
    except OSError as exc:
        raise DataError(f"cannot write the model repository in {str(target.parent)!r}: "
                        f"{exc.strerror or exc}") from None
    except TargetChanged as exc:
        raise UsageError(str(exc) + ("; pass `force=True` to replace it"
                                     if exc.appeared and not options.force else "")) from None
