"""How much a Keras Application's own outputs move when every input pixel moves by one float32 ulp.

    python benchmarks/rounding_sensitivity.py EfficientNetV2L [--size 32]

A model that turns a one-ulp change of its input into a change of its outputs as large as their
range is chaotic: no engine that sums in another order can agree with Keras element by element,
however faithful the conversion. Random weights (BatchNorm at mean 0, variance 1) make deep
families so; this measures it for the coverage table (benchmarks/applications.py).
"""
from __future__ import annotations

import argparse
import os


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("family", help="keras.applications name, e.g. EfficientNetV2L")
    p.add_argument("--size", type=int, default=32, help="input height and width (default 32)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)  # the weights benchmarks/applications.py builds
    model = getattr(keras.applications, args.family)(weights=None, input_shape=(args.size, args.size, 3))
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    names = [convs[len(convs) // 2], convs[-1]]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names] + [model.output])
    x = np.random.default_rng(0).integers(0, 256, (16, args.size, args.size, 3)).astype(np.float32)
    before = [np.asarray(t) for t in probe(x, training=False)]
    after = [np.asarray(t) for t in probe(np.nextafter(x, np.float32(np.inf)), training=False)]
    print(f"{args.family} at {args.size}x{args.size}, random weights, 16 noise images, every pixel + 1 ulp:")
    for name, a, b in zip([*names, "predictions"], before, after):
        same = (a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)).mean()
        print(f"  {name}: range {np.abs(a).max():.3g}, moved by {np.abs(a - b).max():.3g}; "
              f"argmax unchanged on {same:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
