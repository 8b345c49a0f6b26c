"""`python -m runtime triton ARTIFACTS --out model_repository/`: a Triton Inference Server model repository.

Writes OUT/NAME/config.pbtxt and OUT/NAME/1/model.onnx (platform onnxruntime_onnx, every output
of the manifest, dynamic batching, an instance group), built in a temporary folder beside
OUT/NAME and renamed into place: other models in OUT are never touched.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from runtime.artifacts.atomic import atomic_dir
from runtime.errors import DataError, TargetChanged, UsageError
from runtime.artifacts.manifest import ONNX_FILE, Manifest, read_manifest, verify_files_against
from runtime.artifacts.paths import confine

CONFIG = "config.pbtxt"
VERSION = "1"
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}


def add_triton_parser(sub) -> None:
    p = sub.add_parser("triton", help="write a Triton Inference Server model repository (config.pbtxt + model.onnx)",
                       description="Write OUT/NAME/config.pbtxt and OUT/NAME/1/model.onnx for Triton Inference "
                                   "Server (onnxruntime backend), atomically; other models in OUT are kept.")
    p.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    p.add_argument("--out", type=Path, required=True, help="the model repository folder (created if missing)")
    p.add_argument("--name", help="model name (default: the model's name in the manifest)")
    p.add_argument("--max-batch", type=int, default=64, help="max_batch_size (default: 64)")
    p.add_argument("--max-delay-ms", type=float, default=0.0,
                   help="dynamic batching max_queue_delay (default: 0, Triton's default)")
    p.add_argument("--instances", type=int, default=1, help="model instances per device (default: 1)")
    p.add_argument("--kind", choices=sorted(KINDS), default="auto",
                   help="instance kind: gpu, cpu, or auto (GPUs when Triton has them; default)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT/NAME that holds a config.pbtxt")
    p.set_defaults(func=cmd_triton)


def cmd_triton(args: argparse.Namespace) -> int:
    from runtime.serve.server import model_name

    manifest = read_manifest(args.artifacts, verify_files=False)
    name = model_name(manifest, args.name)
    folder = write_repository(args.artifacts, args.out, name, args.max_batch, args.max_delay_ms,
                              args.instances, args.kind, args.force)
    print(f"wrote {folder / CONFIG} and {folder / VERSION / ONNX_FILE}\n"
          f"run: docker run --rm -p 8000:8000 -v {args.out.resolve()}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
          f"tritonserver --model-repository=/models")
    return 0


def config_text(manifest: Manifest, name: str, max_batch: int = 64, max_delay_ms: float = 0.0,
                instances: int = 1, kind: str = "auto") -> str:
    """config.pbtxt in protobuf text format (Triton's model_config.proto), from the manifest."""
    def tensor(t) -> str:
        dims = ", ".join("-1" if d is None else str(int(d)) for d in t.shape[1:])  # without the batch
        return f'  {{\n    name: "{t.name}"\n    data_type: TYPE_FP32\n    dims: [ {dims} ]\n  }}'

    return "\n".join([
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch}",
        "input [\n" + tensor(manifest.input) + "\n]",
        "output [\n" + ",\n".join(tensor(o) for o in manifest.outputs) + "\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {round(max_delay_ms * 1000)}\n}}",
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {KINDS[kind]}\n  }}\n]",
    ]) + "\n"


def write_repository(artifacts: str | os.PathLike, out: str | os.PathLike, name: str, max_batch: int = 64,
                     max_delay_ms: float = 0.0, instances: int = 1, kind: str = "auto", force: bool = False) -> Path:
    """Write out/name/{config.pbtxt, 1/model.onnx} atomically; return out/name.

    Raises:
        ArtifactError: the artifacts' model.onnx is missing or does not match its sha256.
        UsageError: bad numbers or kind, or out/name exists (without force, or not a Triton model).
    """
    if max_batch < 1 or instances < 1 or max_delay_ms < 0 or kind not in KINDS:
        raise UsageError(f"expected --max-batch >= 1, --instances >= 1, --max-delay-ms >= 0 and --kind in "
                         f"{sorted(KINDS)}; got {max_batch}, {instances}, {max_delay_ms:g}, {kind!r}")
    artifacts, out = Path(artifacts), Path(out)
    manifest = read_manifest(artifacts, verify_files=False)
    verify_files_against(manifest, artifacts, only=[ONNX_FILE])
    text = config_text(manifest, name, max_batch, max_delay_ms, instances, kind)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a folder; expected a model repository folder")
    out.mkdir(parents=True, exist_ok=True)
    target = confine(out, name, "model name")
    if target.exists() or target.is_symlink():
        if not force:
            raise UsageError(f"{str(target)!r} exists; pass --force to replace it")
        if target.is_symlink() or not (target / CONFIG).is_file():
            raise UsageError(f"{str(target)!r} holds no {CONFIG}: not a Triton model, not replaced")

    def still_a_model(old: Path) -> None:  # checked again once moved aside: only a Triton model is replaced
        if not (old / CONFIG).is_file():
            raise UsageError(f"{str(target)!r} holds no {CONFIG} any more (another program replaced it meanwhile): "
                             "not a Triton model, not replaced")

    try:
        with atomic_dir(target, replaceable=still_a_model if force else None) as tmp:
            (tmp / VERSION).mkdir()
            shutil.copyfile(artifacts / ONNX_FILE, tmp / VERSION / ONNX_FILE)
            (tmp / CONFIG).write_text(text)
    except OSError as exc:
        raise DataError(f"cannot write the model repository in {str(out)!r}: {exc}") from None
    except TargetChanged as exc:
        raise UsageError(str(exc) + ("; pass `force=True` to replace it" if exc.appeared and not force else "")) \
            from None
    return target
