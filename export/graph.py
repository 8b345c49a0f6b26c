"""Which layers to expose, and the multi-output Keras model that exposes them."""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field

from runtime.artifacts.manifest import INPUT_DTYPES, INPUT_NAME, LAYOUTS, InputSpec, OutputSpec, Preprocessing
from runtime.errors import ExportError

from .follow import run_layers
from .model_io import load_keras_model

MODEL_OUTPUT = "model_output"
FEATURE_MAP = "feature_map"
# Output names must be valid TensorFlow scope names, plain ONNX value names and runtime.artifacts.paths.safe_name alike.
VALID_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


# The layer classes exposed by default (keras.layers names; `python -m export --help` lists them).
CONV_CLASS_NAMES = ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                    "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D")


def conv_classes():
    """Every Keras convolution: 1-D, 2-D and 3-D, plain, transposed, depthwise and separable."""
    from keras import layers

    return tuple(getattr(layers, name) for name in CONV_CLASS_NAMES)


def is_conv(layer) -> bool:
    """A convolution, or a TimeDistributed wrapper around one (its output is the convolution's, per time step)."""
    while type(layer).__name__ == "TimeDistributed":
        layer = layer.layer
    return isinstance(layer, conv_classes())


def conv_layout(layer, rank: int) -> str | None:
    """The layout of a convolution's output: NWC, NHWC, NDHWC by the conv's rank, 'T' after N per TimeDistributed."""
    time = ""
    while type(layer).__name__ == "TimeDistributed":
        time, layer = time + "T", layer.layer
    if not isinstance(layer, conv_classes()):
        return None
    spatial = {1: "W", 2: "HW", 3: "DHW"}.get(getattr(layer, "rank", 0))
    layout = f"N{time}{spatial}C" if spatial else None
    return layout if layout and len(layout) == rank else None


def layer_class(layer) -> str:
    """The class name, with the wrapped layer's for wrappers: 'TimeDistributed(Conv2D)'."""
    inner = getattr(layer, "layer", None) if type(layer).__name__ == "TimeDistributed" else None
    return f"{type(layer).__name__}({layer_class(inner)})" if inner is not None else type(layer).__name__


def input_layout(rank: int, nodes: list | None = None) -> str:
    """The input's layout: that of the first convolution of the input's rank (NTHWC before a TimeDistributed
    Conv2D, NDHWC before a Conv3D), else by rank (NWC, NHWC, NDHWC)."""
    for node in nodes or ():
        layout = conv_layout(node.layer, rank)
        if layout:
            return layout
    return LAYOUTS.get(rank, f"rank{rank}")


def model_inputs(model) -> list:
    """The model's inputs (objects with .shape and .dtype): its own, or for a subclassed model the shape it was
    built with (its build config), float32; [] when neither is known."""
    import keras

    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        return list(inputs)
    shape = (model.get_build_config() or {}).get("input_shape") if hasattr(model, "get_build_config") else None
    if isinstance(shape, (list, tuple)) and shape and all(d is None or isinstance(d, int) for d in shape):
        return [keras.KerasTensor(tuple(shape), dtype=getattr(model, "input_dtype", None) or "float32")]
    return []


def input_spec(model, preprocessing: Preprocessing, nodes: list | None = None,
               shape: tuple | None = None) -> InputSpec:
    """The model's input as the artifact contract names it: [batch, ...] of any rank from 3 (NWC) to 6.

    Spatial dimensions the model leaves free (None) stay free: the artifacts take any size there.
    shape (without the batch) fixes them, and must agree with the model's fixed dimensions.

    Raises:
        ExportError: not exactly one input, a rank outside 3..6, a free channel count, a shape that
            disagrees with the model's, or a dtype that is neither float nor integer.
    """
    inputs = model_inputs(model)
    if not inputs:
        raise ExportError(f"model {model.name!r} has no defined input (a Sequential model never built or "
                          "called?); build it on a keras.Input before saving it")
    if len(inputs) != 1:
        raise ExportError(f"model has {len(inputs)} inputs; this version exports models with one input: wrap "
                          "the model in one whose single input is split into the others, or export each branch")
    shape, dtype, fixed = tuple(inputs[0].shape), str(inputs[0].dtype), shape
    dims = shape[1:]
    if not 3 <= len(shape) <= 6:
        raise ExportError(f"model input has shape {list(shape)}; expected [batch, W, C] (1-D), [batch, H, W, C] "
                          "(2-D), [batch, D, H, W, C] (3-D or frames) or one time axis more")
    if dims[-1] is None:
        raise ExportError(f"model input has shape {list(shape)}, with a free channel count; rebuild the model on "
                          "a keras.Input with the channel count fixed, load the weights and save it")
    if fixed is not None:
        fits = len(fixed) == len(dims) and all(d is None or d == f for d, f in zip(dims, fixed))
        if not fits or any(type(f) is not int or f < 1 for f in fixed):
            raise ExportError(f"`input_shape` {list(fixed)} does not fit the model's input {list(shape[1:])}: give "
                              "every dimension but the batch, positive, equal to the model's where it fixes one")
        dims = tuple(fixed)
    if dtype not in INPUT_DTYPES:
        raise ExportError(f"model input has dtype {dtype}; expected one of {list(INPUT_DTYPES)}")
    layout = input_layout(len(shape), nodes)
    return InputSpec(INPUT_NAME, dtype, (None, *dims), layout, preprocessing)


def check_channels_last(nodes: list) -> None:
    """Raises ExportError for layers (at any depth) that compute in NCHW."""
    channels_first = [n.path for n in nodes if getattr(n.layer, "data_format", "") == "channels_first"]
    if channels_first:
        raise ExportError(f"layers {channels_first} use data_format='channels_first'; the artifacts take NHWC "
                          "images, so rebuild the model channels_last (Keras' default) and copy the weights")


@dataclass
class Node:
    """One layer at any nesting depth: its path ('base/block_1_expand') and its output in the traced graph."""

    path: str
    layer: object
    depth: int
    tensors: list = field(default_factory=list)  # one per call: a shared layer has several

    @property
    def name(self) -> str:
        """The output name: the path with '.' for '/' and '-' for '@' (a shared layer's later call sites), so that
        it is one safe name (top-level: the layer name)."""
        return self.path.replace("/", ".").replace("@", "-")


@dataclass
class Traced:
    """The model re-traced on a fresh input, with every layer's output at any nesting depth.

    Nested models are flattened: their inner layers become reachable from the outer input, with
    the same weights.
    """

    model: object
    input: object
    outputs: list
    nodes: dict  # {path: Node}, in execution order; a sub-model's own node follows its layers

    @property
    def layers(self) -> list[Node]:
        """Every layer but the inputs, at any nesting depth, in execution order."""
        from keras import layers

        return [n for n in self.nodes.values() if not isinstance(n.layer, layers.InputLayer)]


def trace(model, shape: tuple | None = None) -> Traced:
    """Trace the model on fresh inputs (of `shape` without the batch, when given: a fixed size for free dims)."""
    import keras

    nodes: dict[str, Node] = {}

    def record(path, layer, depth, out):
        node = nodes.pop(path, None) or Node(path, layer, depth)
        nodes[path] = node  # re-inserted: a sub-model's own output comes after its layers
        node.tensors.append(out)

    inputs = [keras.Input(batch_shape=(None, *shape) if shape else t.shape, dtype=t.dtype)
              for t in model_inputs(model)]
    inp = inputs[0] if len(inputs) == 1 else inputs
    outputs = run_layers(model, inp, record)
    return Traced(model, inp, _as_list(outputs), nodes)


class FeatureModel:
    """The model's own output(s) and the chosen layers' outputs, as one dict, computed in one pass.

    Not a keras.Model: the flattened layers of nested models may share names, which a Functional
    refuses; and only the chosen outputs are kept while the pass runs.
    """

    def __init__(self, model, specs: list[OutputSpec]):
        self.model = model
        self.specs = specs
        self._wanted = {call_site(s.layer): s.name for s in specs if s.role == FEATURE_MAP}
        self._model_outputs = [s.name for s in specs if s.role == MODEL_OUTPUT]

    def __call__(self, images, training: bool = False) -> dict:
        """Outputs in manifest order; inference only (training must stay False)."""
        if training:
            raise ValueError("FeatureModel runs in inference mode only")
        kept, calls = {}, {}

        def keep(path, layer, depth, out):
            calls[path] = calls.get(path, 0) + 1
            if (path, calls[path]) in self._wanted:
                kept[self._wanted[path, calls[path]]] = out

        outputs = dict(zip(self._model_outputs, _as_list(run_layers(self.model, images, keep))))
        found = {s.name: outputs[s.name] if s.role == MODEL_OUTPUT else kept[s.name] for s in self.specs}
        return {name: _float32(t) for name, t in found.items()}  # one rule: every output is float32


def _float32(tensor):
    """float16/bfloat16 maps of a mixed-precision model as float32 (exact: every such value is a float32)."""
    import keras

    dtype = str(getattr(tensor, "dtype", "float32"))
    return keras.ops.cast(tensor, "float32") if "float" in dtype and dtype != "float32" else tensor


def compute_dtype(model) -> str:
    """The narrowest float dtype any layer computes in: "float16" or "bfloat16" under mixed precision."""
    layers = model._flatten_layers(include_self=True, recursive=True)  # noqa: SLF001 (Keras 3 API)
    dtypes = {str(getattr(layer, "compute_dtype", "float32")) for layer in layers}
    return next((d for d in ("float16", "bfloat16") if d in dtypes), "float32")


def select_layers(nodes: list[Node], names: list[str] | None = None) -> list[Node]:
    """The layers to expose: the named ones, or by default every convolution (is_conv) at any depth, in execution
    order.

    A name is a path ('base/conv'), an output name ('base.conv') or a layer name found at exactly one depth.

    Raises:
        ExportError: an unknown or ambiguous name, or no convolution and no names given.
    """
    if names is None:
        chosen = [n for n in nodes if is_conv(n.layer)]
        if not chosen:
            raise ExportError(f"the model has no convolution (Conv1D/2D/3D, transposed, depthwise or separable) "
                              f"to expose; pass `layers` with any of: {_paths(nodes)}")
        return chosen
    if not names:
        raise ExportError(f"no layer names given; the model has: {_paths(nodes)}")
    return [_find(nodes, name) for name in dict.fromkeys(names)]


def _find(nodes: list[Node], name: str) -> Node:
    exact = [n for n in nodes if name in (n.path, n.name)]
    if exact:
        return exact[0]
    site = re.fullmatch(r"(.+)[@-](\d+)", name)  # one call site of a shared layer: 'block/bc1@2', 'block.bc1-2'
    if site:
        node = next((n for n in nodes if site[1] in (n.path, n.name)), None)
        if node is not None and 2 <= int(site[2]) <= len(node.tensors):
            return Node(f"{node.path}@{site[2]}", node.layer, node.depth, [node.tensors[int(site[2]) - 1]])
    inner = [n for n in nodes if n.layer.name == name]
    if len(inner) == 1:
        return inner[0]
    if inner:
        raise ExportError(f"layer name {name!r} is ambiguous: it names {[n.path for n in inner]}; pass one of "
                          "these paths")
    raise ExportError(f"unknown layer name {name!r}; {_suggest(nodes, name)}")


def _suggest(nodes: list[Node], name: str) -> str:
    """'did you mean ...?' with the closest paths (difflib), else the paths themselves when they are few."""
    paths = {n.path: n.path for n in nodes}
    for n in nodes:  # the dotted name and the bare inner name lead to the path too
        paths.setdefault(n.name, n.path)
        paths.setdefault(n.layer.name, n.path)
    close = list(dict.fromkeys(paths[m] for m in difflib.get_close_matches(name, list(paths), n=5, cutoff=0.6)))
    if close:
        return f"did you mean {' or '.join(repr(p) for p in close)}? (`python -m export --list-layers` lists all " \
               f"{len(nodes)})"
    return f"the model has: {_paths(nodes, limit=20)}"


def _paths(nodes: list[Node], limit: int = 60) -> str:
    paths = [n.path for n in nodes]
    if len(paths) <= limit:
        return str(paths)
    return f"{paths[:limit]} ... and {len(paths) - limit} more (`python -m export --list-layers` lists them all)"


def layer_tree(traced: Traced) -> str:
    """The model's layers as an indented tree: each layer's path (what `layers` takes), class and output shape,
    with '*' marking the layers exposed by default."""
    model = traced.model
    lines = [f"{model.name} ({type(model).__name__}), input {_shape(traced.input)}"]
    shown: set[str] = set()
    for node in traced.layers:
        parts = node.path.split("/")
        # A sub-model's own node follows its layers in execution order; the tree shows it first.
        for owner in ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]:
            if owner not in shown:
                shown.add(owner)
                lines.append(_tree_line(traced.nodes[owner]))
    exposed = sum(isinstance(n.layer, conv_classes()) for n in traced.layers)
    lines.append(f"{len(traced.layers)} layers; '*' marks the {exposed} exposed by default (every "
                 f"{', '.join(CONV_CLASS_NAMES)}); `layers` takes the paths shown")
    return "\n".join(lines)


def list_layers(model_path: str | os.PathLike, allow_unsafe: bool = False, imports=()) -> str:
    """The layer tree (layer_tree) of a trained Keras model file, for choosing the layers to expose.

    Any model Keras loads is listed, also those the export refuses (several or free-size inputs).

    Raises:
        ExportError: an unreadable model file, or a model without a defined input.
    """
    model = load_keras_model(model_path, allow_unsafe, imports)
    if not model_inputs(model):
        input_spec(model, Preprocessing())  # its one-line error: no defined input
    return layer_tree(trace(model))


def _tree_line(node: Node) -> str:
    shape = _shape(node.tensors[0]) if node.tensors else "?"
    calls = f" (called {len(node.tensors)} times)" if len(node.tensors) > 1 else ""
    mark = "*" if isinstance(node.layer, conv_classes()) else " "
    indent = mark + " " * (2 * node.depth + 1)
    return f"{indent}{node.path:<{44 - len(indent)}} {type(node.layer).__name__:<24} {shape}{calls}"


def _shape(tensor) -> str:
    shape = getattr(tensor, "shape", None)
    return str([None, *shape[1:]]) if shape is not None else "(several tensors)"


def feature_model(traced: Traced, layers: list[Node]):
    """The model's own output(s), then each exposed layer, as one callable with dict outputs.

    Returns:
        (FeatureModel, list[OutputSpec]) with outputs in manifest order.

    Raises:
        ExportError: an exposed layer without one output tensor, or names that cannot name outputs.
    """
    outputs, specs = {}, []
    for i, tensor in enumerate(traced.outputs):  # named after the outermost layer that produced it
        producers = [n for n in traced.layers if any(t is tensor for t in n.tensors)]
        own = traced.model.name + (f"_{i}" if len(traced.outputs) > 1 else "")  # a subclassed model's own output
        producer = min(producers, key=lambda n: n.depth) if producers else Node(own, traced.model, 0)
        _add(outputs, specs, producer, tensor, MODEL_OUTPUT)
    for node in layers:
        if not all(hasattr(t, "shape") for t in node.tensors):
            raise ExportError(f"layer {node.path!r} returns several tensors; expose another layer")
        for call, tensor in enumerate(node.tensors, 1):  # a shared layer: one output per call site
            site = node if call == 1 else Node(f"{node.path}@{call}", node.layer, node.depth)
            _add(outputs, specs, site, tensor, FEATURE_MAP)
    return FeatureModel(traced.model, specs), specs


def unreached_convs(traced: Traced) -> list[str]:
    """Convolutions the model holds but whose call no trace reached (e.g. run by a custom layer through
    their weights, not their call): they cannot be exposed, and are named rather than skipped silently."""
    reached = {id(n.layer) for n in traced.nodes.values()}
    inside = {id(inner) for n in traced.nodes.values() if type(n.layer).__name__ == "TimeDistributed"
              for inner in [n.layer.layer]}
    held = traced.model._flatten_layers(include_self=False, recursive=True)  # noqa: SLF001 (Keras 3 API)
    return [layer.name for layer in held if is_conv(layer) and id(layer) not in reached | inside]


def call_site(path: str) -> tuple[str, int]:
    """'block/bc1@2' -> ('block/bc1', 2): the second call of a shared layer; 'block/bc1' -> (..., 1)."""
    base, _, call = path.partition("@")
    return base, int(call) if call.isdigit() else 1


def _as_list(outputs) -> list:
    import keras

    return keras.tree.flatten(outputs)


def _add(outputs: dict, specs: list, node: Node, tensor, role: str) -> None:
    name = node.name
    if name in outputs:
        return
    if not VALID_NAME.fullmatch(name) or len(name) > 128 or name.endswith("."):
        raise ExportError(f"layer name {node.path!r} cannot name an output: use 1-128 letters, digits, '_', '.' "
                          "and '-' only (rename the layer where the model is defined, then save it again)")
    layer = node.layer
    shape = tuple(tensor.shape)
    if getattr(layer, "data_format", "channels_last") == "channels_first" and len(shape) == 4:
        layout = "NCHW"
    else:
        layout = conv_layout(layer, len(shape)) or LAYOUTS.get(len(shape), f"rank{len(shape)}")
    outputs[name] = tensor
    specs.append(OutputSpec(name, node.path, layer_class(layer), (None, *shape[1:]), layout, role))
