"""Keras model file -> verified artifacts folder, published atomically."""
from __future__ import annotations

import gc
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from runtime.artifacts.atomic import replace_dir, umask
from runtime.artifacts.hashing import MANIFEST, sha256_file, tree_files
from runtime.artifacts.manifest import (
    ONNX_FILE,
    SAVED_MODEL_DIR,
    InputSpec,
    Manifest,
    Preprocessing,
    read_manifest,
    unlisted_files,
)
from runtime.compare import DEFAULT_TOLERANCE, Tolerance
from runtime.errors import ArtifactError, ExportError, FeatureMapsError, FeatureMapsWarning, TargetChanged
from runtime.preprocess import to_batch

from .artifacts import DEFAULT_OPSET, serving_function, write_onnx, write_saved_model
from .graph import check_channels_last, compute_dtype, feature_model, input_spec, select_layers, trace, unreached_convs
from .model_io import load_keras_model
from .preprocessing import choose_preprocessing
from .progress import Progress
from .reference import REFERENCE_MODEL
from .verify import merge_reports, verification_images, verification_shapes, verify


class UnreachedWarning(FeatureMapsWarning):  # run_cli prints it as one line
    """Convolutions a model holds that no call reaches: named, never skipped silently."""


@dataclass
class ExportOptions:
    layers: list[str] | None = None
    data: str | None = None
    opset: int = DEFAULT_OPSET
    force: bool = False
    allow_unsafe: bool = False
    tolerance: Tolerance = DEFAULT_TOLERANCE
    preprocessing: Preprocessing | None = None  # None: what the model expects (see export.preprocessing)
    labels: list[str] | None = None
    input_shape: tuple | None = None  # fixes the input's free dimensions (without the batch); None: they stay free
    imports: tuple = ()  # Python files or modules registering custom layers/models, imported before loading


def export_model(model_path: str | os.PathLike, out: str | os.PathLike, options: ExportOptions | None = None,
                 progress: Progress | None = None) -> Manifest:
    """Export a trained Keras model into out/ (manifest.json, model.onnx, saved_model/).

    progress reports each stage (load, SavedModel, ONNX, verification); silent when None.

    Everything is built and verified in a temporary folder beside out/ and renamed into
    place only on success: after any failure or Ctrl-C, a previous out/ is untouched.

    Raises:
        ExportError: bad model, layers or output folder, or outputs that disagree.
    """
    options = options or ExportOptions()
    progress = progress or Progress(None)
    out = Path(out).absolute()
    _check_target(out, options.force, keep=[Path(model_path), options.data and Path(options.data)])
    started = time.perf_counter()
    with progress.stage("load"):
        model = load_keras_model(model_path, options.allow_unsafe, options.imports)
        fixed = options.input_shape and tuple(options.input_shape)
        input_spec(model, Preprocessing(), shape=fixed)  # one input the artifacts take, before tracing
        traced = trace(model, fixed)
        check_channels_last(traced.layers)
        spec = input_spec(model, Preprocessing(), traced.layers, fixed)
        spec = replace(spec, preprocessing=choose_preprocessing(traced.layers, options.preprocessing, spec))
        fmodel, outputs = feature_model(traced, select_layers(traced.layers, options.layers))
        unreached = unreached_convs(traced)
        if unreached and options.layers is None:
            warnings.warn(f"convolution(s) {unreached} are held by the model but never called as layers (a custom "
                          "layer uses their weights directly?), so they cannot be exposed", UnreachedWarning,
                          stacklevel=2)
        labels = _labels(outputs, options.labels)
        source_sha = sha256_file(Path(model_path))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror} in {out.parent}") from None
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would outlive the rename
        with progress.stage("SavedModel"):
            shapes = verification_shapes(spec)
            sets = [verification_images(replace(spec, shape=(None, *s)), options.data, _is_reference(source_sha))
                    for s in shapes]
            images, truth, source = sets[0]
            preview = _write_preview(fmodel, spec, outputs, images[0], truth, tmp)
            serve = serving_function(fmodel, spec)
            write_saved_model(fmodel, serve, tmp / SAVED_MODEL_DIR)
        with progress.stage("ONNX"):
            write_onnx(serve, [o.name for o in outputs], tmp / ONNX_FILE, options.opset,
                       layer_names=[n.layer.name for n in traced.layers], weight_bytes=_weight_bytes(model))
            del serve
            gc.collect()  # the traced graph and tf2onnx's copies of the weights are garbage now
        manifest = Manifest(
            input=spec,
            outputs=outputs,
            labels=labels,
            source_model={"file": Path(model_path).name, "name": model.name, "sha256": source_sha,
                          "params": int(model.count_params())},
            onnx={"file": ONNX_FILE, "opset": options.opset, **_external(tmp / ONNX_FILE)},
            tools=tool_versions(),
            files=tree_files(tmp),
            preview=preview,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        manifest.write(tmp)
        with progress.stage("verification"):
            manifest.verification = merge_reports([verify(fmodel, tmp, manifest, *s, options.tolerance, progress)
                                                   for s in sets], shapes)
        manifest.verification["seconds"] = round(time.perf_counter() - started, 2)
        if not manifest.verification["passed"]:
            half = compute_dtype(model)
            cause = (f" (the model computes in {half}, mixed precision: errors at its rounding are expected; "
                     "raise `noise` or `atol`/`rtol` if these are)") if half != "float32" else ""
            raise ExportError(f"outputs disagree beyond tolerance{cause}, nothing published: "
                              + _first(manifest.verification["problems"]))
        manifest.write(tmp)
        _publish(tmp, out, options.force)
    except FeatureMapsError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if str(tmp) not in str(exc):
            raise
        # The temporary folder is gone now: name the folder the user asked for instead.
        raise type(exc)(str(exc).replace(str(tmp), f"{out} (unpublished)")) from None
    except BaseException as exc:  # Ctrl-C and SIGTERM too (run_cli turns SIGTERM into KeyboardInterrupt)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # e.g. a full disk: not a bug, and nothing was published
            raise ExportError(f"cannot write {out}: {exc.strerror or exc} (while building it in {out.parent}); "
                              "nothing published") from None
        raise
    return manifest


def _first(problems: list[str], shown: int = 4) -> str:
    """The first problems in full (per backend in manifest order: model outputs, then layers as they run), the
    rest by name."""
    rest = [": ".join(p.split(": ")[:2]) for p in problems[shown:]]
    return "; ".join(problems[:shown]) + (f"; and {len(rest)} more: {', '.join(rest)}" if rest else "")


def _write_preview(fmodel, spec: InputSpec, outputs, image, truth, folder: Path) -> dict:
    """The first feature map's figure (header, numbered maps, scale bar) for test image 0: the export at a glance."""
    from viz.figures import layer_figure, save_png
    from viz.tiling import DRAWABLE_LAYOUTS

    first = next((o for o in outputs if o.role == "feature_map" and o.layout in DRAWABLE_LAYOUTS), None)
    if first is None:
        return {}
    maps = np.asarray(fmodel(to_batch(image, spec), training=False)[first.name])
    name = f"preview_{first.name}.png"
    label = f" (label {truth[0]})" if truth is not None else ""  # only where the labels apply
    save_png(layer_figure(maps, first.name, first.layout, layer_class=first.layer_class,
                          subtitle=f"of test image 0{label}, at export"), folder / name)
    return {"file": name, "output": first.name, "image": f"test image 0{label}"}


def _is_reference(sha256: str) -> bool:
    """Whether the model is the shipped reference MNIST CNN, byte for byte (then MNIST labels apply)."""
    return REFERENCE_MODEL.is_file() and sha256 == sha256_file(REFERENCE_MODEL)


def _check_target(out: Path, force: bool, keep: list[Path]) -> None:
    """Refuse an output path that exists (unless force), or that force must never delete.

    Args:
        keep: files the export reads (model, data): out may not contain them.
    """
    if out.exists() and not force:
        raise ExportError(f"output folder {out} already exists; pass `force=True` to replace it")
    if out.is_symlink():
        raise ExportError(f"`out` {out} is a symbolic link; pass the folder itself")
    if out.exists() and not out.is_dir():
        raise ExportError(f"output path {out} exists and is not a folder")
    real = out.resolve()
    if real == Path.cwd().resolve() or real in Path.cwd().resolve().parents:
        raise ExportError(f"`out` {out} is the current folder or one of its parents; choose a folder beside it")
    for path in keep:
        if path and real in Path(path).resolve().parents:
            raise ExportError(f"`out` {out} holds {path}, which the export reads; choose another folder")
    inside = next((p for p in real.parents if (p / MANIFEST).is_file()), None)
    if inside is not None:
        raise ExportError(f"`out` {out} is inside the artifacts folder {inside}; choose a folder beside it")
    if out.is_dir():
        _check_replaceable(out, out)
    parent = out.parent
    if not parent.is_dir():
        raise ExportError(f"cannot write {out}: parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {out}: parent folder {parent} is not writable")


def _check_replaceable(folder: Path, out: Path) -> None:
    """`force=True` replaces only a featuremaps artifacts folder: a valid manifest, and no file it does not list.

    Raises:
        ExportError: folder (the current `out`, or where it was moved aside) is anything else.
    """
    if not any(folder.iterdir()):
        return  # an empty folder holds nothing to lose
    if not (folder / MANIFEST).is_file():
        raise ExportError(f"`force=True` replaces only artifacts folders, and {out} holds no {MANIFEST}; "
                          "choose a new or empty `out`")
    try:
        unlisted = unlisted_files(folder, read_manifest(folder, verify_files=False))
    except ArtifactError as exc:
        raise ExportError(f"`force=True` replaces only featuremaps artifacts folders, and the manifest of {out} is "
                          f"not one ({exc}); choose a new or empty `out`") from None
    if unlisted:
        more = f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
        raise ExportError(f"`force=True` replaces only artifacts folders holding nothing but the files their "
                          f"manifest lists, and {out} also holds {unlisted[:5]}{more}; move them away or choose "
                          "another `out`")


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Rename tmp to out, never replacing anything the export did not check (runtime.artifacts.atomic.replace_dir).

    The rename fails if out exists by then (it may have appeared while the export ran). With force,
    an existing out is first renamed aside, checked again there (nothing unlisted may have appeared
    in it meanwhile), and deleted only once tmp is in place.

    Raises:
        ExportError: out appeared or changed during the export, or cannot be written; nothing is left behind.
    """
    try:
        replace_dir(tmp, out, replaceable=(lambda old: _check_replaceable(old, out)) if force else None)
    except TargetChanged as exc:
        if exc.kept is not None:
            raise ExportError(f"{out} was replaced by another program during the export; the previous folder is "
                              f"kept at {exc.kept}") from None
        if exc.appeared:
            advice = "" if force else "; pass `force=True` to replace artifacts"
            raise ExportError(f"{out} appeared while this export ran (another export or program wrote it); left it "
                              f"as it is and published nothing{advice}") from None
        raise ExportError(f"{out} is a symbolic link or not a folder (another program may have put it there while "
                          "this export ran); left it as it is and published nothing") from None


def _external(path: Path) -> dict:
    """{"external_data": [files]} for a graph with ONNX external data (the ONNX backend loads only those), else {}."""
    files = onnx_external_data(path)
    return {"external_data": files} if files else {}


def onnx_external_data(path: Path) -> list[str]:
    """The files an ONNX graph keeps tensors in (ONNX external data), relative to its folder: listed in the manifest."""
    import onnx

    def tensors(graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                yield from [attr.t] if attr.HasField("t") else []
                yield from attr.tensors
                for sub in [attr.g] if attr.HasField("g") else []:
                    yield from tensors(sub)
                for sub in attr.graphs:
                    yield from tensors(sub)

    model = onnx.load(os.fspath(path), load_external_data=False)
    return sorted({entry.value for t in tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL
                   for entry in t.external_data if entry.key == "location"})


def _weight_bytes(model) -> int:
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)


def _labels(outputs, given: list[str] | None) -> list[str]:
    """Class labels of the first model output: given ones, else "0", "1", ..."""
    first = outputs[0]
    classes = first.shape[1] if len(first.shape) == 2 else None
    if given is None:
        return [str(i) for i in range(classes)] if classes else []
    if len(given) != classes:
        raise ExportError(f"{len(given)} labels given, but output {first.name!r} has {classes} classes")
    return list(given)


def tool_versions() -> dict[str, str]:
    import keras
    import numpy
    import onnx
    import onnxruntime
    import tensorflow
    import tf2onnx

    return {
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }
