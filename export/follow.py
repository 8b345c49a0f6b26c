"""Running a Keras model layer by layer at any depth: the functional graph, and inside custom layers and
subclassed models by following their calls (every sublayer's `call`, wrapped while the pass runs)."""
from __future__ import annotations

import contextlib


def run_layers(model, inputs, visit, prefix: str = "", depth: int = 0):
    """Run a model layer by layer, nested models too, calling visit(path, layer, depth, output) per call.

    Functional and Sequential models run through Keras' own graph walk (the one Functional.call uses), so
    the numbers are the model's. A subclassed model, and any layer holding sublayers (a custom block), is
    called as a whole while its sublayers' calls are followed: they are visited as `path/sublayer`.
    """
    functional = getattr(model, "_functional", None) or model  # a Sequential runs through its Functional
    if not hasattr(functional, "_run_through_graph"):  # subclassed: no graph to walk, follow the call
        with following(model, prefix, depth, visit):
            return model(inputs)

    def operation_fn(op):
        def call(*args, **kwargs):
            path = f"{prefix}{op.name}"
            if is_model(op):
                out = run_layers(op, args[0] if len(args) == 1 else list(args), visit, f"{path}/", depth + 1)
            else:
                with following(op, f"{path}/", depth + 1, visit):
                    out = op(*args, **kwargs)
            visit(path, op, depth, out)
            return out
        return call

    return functional._run_through_graph(inputs, operation_fn=operation_fn)  # noqa: SLF001 (Keras 3 API)


def is_model(layer) -> bool:
    return hasattr(layer, "_run_through_graph") or getattr(layer, "_functional", None) is not None


def sublayers(layer) -> list:
    """The layers a layer holds directly (not itself), in the order it tracks them."""
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=False)) if flatten else []


@contextlib.contextmanager
def following(layer, prefix: str, depth: int, visit):
    """While the block runs, every sublayer of `layer` (at any depth) reports its calls to visit, as
    `prefix + name` (`block/inner_conv`, `block/inner/conv`). Wrappers are instance attributes, removed after.

    TimeDistributed and other wrappers are not entered: their own output is the wrapped layer's, per step.
    """
    wrapped = []

    def wrap(sub, path: str, level: int):
        if type(sub).__name__ in ("TimeDistributed", "Bidirectional") or "call" in vars(sub):
            return  # a wrapper (its output stands for the inner layer's), or already followed (shared)
        original = sub.call

        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            visit(path, sub, level, out)
            return out

        sub.call = call
        wrapped.append(sub)
        for inner in sublayers(sub):
            wrap(inner, f"{path}/{inner.name}", level + 1)

    if not type(layer).__name__ == "TimeDistributed":
        for sub in sublayers(layer):
            wrap(sub, f"{prefix}{sub.name}", depth)
    try:
        yield
    finally:
        for sub in wrapped:
            del sub.call
