"""Model cost in floating-point operations per image, counted from the ONNX graph.

Convention: a multiply-add counts as 2 FLOPs, and only Conv, ConvTranspose, Gemm and MatMul are
counted (bias adds, activations, pooling, BatchNorm and softmax are ignored: together they are a
few percent of the total for CNNs). Per image: the batch dimension is left out.

    Conv:    2 * Cout * Hout * Wout * (Cin / group) * Kh * Kw
    Gemm / MatMul with a constant [K, N] weight: 2 * K * N per row (one row per image for Dense)

The reference MNIST CNN: 389,376 + 4,460,544 (convs) + 204,800 + 1,280 (dense) = 5,056,000 FLOPs.

Each count is named after its Keras layer, not the TF-internal node: a node whose result reaches a
graph output through only its own bias, activation and layout ops is that exposed layer (output
names are layer names); any other node is named by its TF scope, less the `_<n>` call counter
Keras appends when the exposed layers show that this graph's scopes carry one.

    python -m benchmarks.flops artifacts/model.onnx     (or the artifacts folder)
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from runtime.cli.args import ArgumentParser
from runtime.cli.process import run_cli
from runtime.errors import ArtifactError

COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops that belong to the layer whose Conv/MatMul feeds them: bias, activation, layout changes.
SAME_LAYER = ("Add", "Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softmax", "Clip", "HardSigmoid",
              "Transpose", "Identity")
_CALL_SUFFIX = re.compile(r"_\d+$")


@dataclass
class FlopCount:
    total: int = 0
    by_node: list[tuple[str, str, int]] = field(default_factory=list)  # (Keras layer, op type, FLOPs)

    def add(self, node, flops: int) -> None:
        self.by_node.append((node.name or node.output[0], node.op_type, int(flops)))
        self.total += int(flops)


def onnx_flops(model) -> FlopCount:
    """FLOPs per image of an ONNX model (a path or an onnx.ModelProto).

    Raises:
        ArtifactError: a path that is missing or does not hold an ONNX model.
        ValueError: a counted node whose shapes cannot be inferred statically.
    """
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = load_onnx(model)
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    weights = {init.name: list(init.dims) for init in graph.initializer}
    shapes = {v.name: _dims(v) for v in [*graph.input, *graph.value_info, *graph.output]}
    count = FlopCount()
    for node in graph.node:
        if node.op_type not in COUNTED:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            w = weights.get(node.input[1])
            out = shapes.get(node.output[0])
            inp = shapes.get(node.input[0])
            if w is None or not _static(out, 1) or not _static(inp, 1):
                raise ValueError(f"cannot count {node.op_type} {node.name!r}: weight or shapes not static")
            if node.op_type == "Conv":  # w: [Cout, Cin/group, Kh, Kw]; out: [N, Cout, Hout, Wout]
                count.add(node, 2 * math.prod(out[1:]) * math.prod(w[1:]))
            else:  # w: [Cin, Cout/group, Kh, Kw]; every input element is scattered over Cout/group*Kh*Kw outputs
                count.add(node, 2 * math.prod(inp[1:]) * math.prod(w[1:]))
            continue
        a, b = node.input[0], node.input[1]
        w = weights.get(b)
        if w is None or len(w) != 2:
            raise ValueError(f"cannot count {node.op_type} {node.name!r}: second input is not a constant matrix")
        k, n = w
        if node.op_type == "Gemm" and any(att.name == "transB" and att.i for att in node.attribute):
            k, n = n, k
        rows = shapes.get(a)
        # Rows per image: the dimensions between the batch and the reduced one (none for a Dense layer).
        per_image = 1 if rows is None or len(rows) <= 2 else rows[1:-1]
        if not isinstance(per_image, int):
            if not _static(per_image, 0):
                raise ValueError(f"cannot count {node.op_type} {node.name!r}: input shape {rows} not static")
            per_image = math.prod(per_image)
        count.add(node, 2 * k * n * per_image)
    names = layer_names(graph, [n for n in graph.node if n.op_type in COUNTED])
    count.by_node = [(names[i], op, flops) for i, (_, op, flops) in enumerate(count.by_node)]
    return count


def layer_names(graph, nodes) -> list[str]:
    """The Keras layer of each node (see the module docstring for the rule)."""
    outputs = {o.name for o in graph.output}
    constants = {i.name for i in graph.initializer}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def exposed_as(node) -> str | None:
        value = node.output[0]
        while value not in outputs:
            users = consumers.get(value, [])
            if len(users) != 1 or users[0].op_type not in SAME_LAYER:
                return None
            user = users[0]
            if user.op_type == "Add" and not any(i in constants for i in user.input):
                return None  # a residual sum joins two layers
            value = user.output[0]
        return value

    exposed = [exposed_as(n) for n in nodes]
    scopes = [_scope(n.name) for n in nodes]
    known = [(e, sc) for e, sc in zip(exposed, scopes) if e and sc]
    suffixed = bool(known) and all(_CALL_SUFFIX.search(sc) and _CALL_SUFFIX.sub("", sc) == e for e, sc in known)
    names = []
    for node, e, sc in zip(nodes, exposed, scopes):
        if e:
            names.append(e)
        elif sc:
            names.append(_CALL_SUFFIX.sub("", sc) if suffixed else sc)
        else:
            names.append(node.name or node.output[0])
    return names


def _scope(node_name: str) -> str | None:
    """The layer scope of a tf2onnx node name: 'model/conv2d_5/BiasAdd' or 'conv2d_5/BiasAdd' -> 'conv2d_5'."""
    parts = node_name.split("/")
    return parts[-2] if len(parts) >= 2 else None


def load_onnx(path: str | os.PathLike):
    """An onnx.ModelProto read from a file (external weights are not needed for counting).

    Raises:
        ArtifactError: the file is missing, a folder, unreadable, or not an ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{str(path)!r} is a folder; expected an ONNX file such as artifacts/model.onnx")
    if not path.is_file():
        raise ArtifactError(f"ONNX file {str(path)!r} not found")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except (OSError, DecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ArtifactError(f"{str(path)!r} is not an ONNX model ({reason})") from None
    if not model.ir_version or not model.HasField("graph"):  # protobuf accepts an empty file as a message
        raise ArtifactError(f"{str(path)!r} is not an ONNX model (no IR version or no graph)")
    return model


def _dims(value_info) -> list | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _static(dims, start: int) -> bool:
    return dims is not None and all(isinstance(d, int) and d > 0 for d in dims[start:])


def main(argv: Sequence[str] | None = None) -> int:
    """Print the FLOPs of each counted node and the total. Errors raise FeatureMapsError (see run_cli)."""
    parser = ArgumentParser(prog="python -m benchmarks.flops", description="FLOPs per image of an ONNX model")
    parser.add_argument("onnx", type=Path, help="path to model.onnx, or an artifacts folder holding one")
    args = parser.parse_args(argv)
    path = args.onnx / "model.onnx" if args.onnx.is_dir() else args.onnx
    if args.onnx.is_dir() and not path.is_file():
        raise ArtifactError(f"{str(args.onnx)!r} is a folder without model.onnx; expected an ONNX file or an "
                            "artifacts folder")
    try:
        count = onnx_flops(path)
    except ValueError as exc:  # a model whose cost is not static: expected, not a bug
        raise ArtifactError(f"{str(path)!r}: {exc}") from None
    for layer, op, flops in count.by_node:
        print(f"{op:14s} {flops:>14,d}  {layer}")
    print(f"{'total':14s} {count.total:>14,d}  FLOPs per image ({count.total / 1e6:.3f} MFLOP)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
