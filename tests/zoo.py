"""Small Keras image models of the architectures the exporter must handle, trained briefly on real digits."""
from __future__ import annotations

import numpy as np


def functional_bn():
    """Functional: padding='same', BatchNorm, a separate ReLU layer, strides, three conv layers."""
    import keras
    from keras import layers

    inp = keras.Input((28, 28, 1), name="pixels")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.Conv2D(24, 3, strides=2, padding="same", name="down")(x)
    x = layers.Activation("relu", name="down_relu")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="head_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="functional_bn")


def rgb_small():
    """Sequential on 3-channel 32x32 inputs, strided 5x5 conv, 5 classes."""
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(8, 5, strides=2, activation="relu", name="rgb_conv"),
        layers.MaxPooling2D(name="rgb_pool"),
        layers.Conv2D(12, 3, padding="same", activation="relu", name="rgb_conv_2"),
        layers.Flatten(name="rgb_flat"),
        layers.Dense(5, activation="softmax", name="rgb_probs"),
    ], name="rgb_small")


def resnet_style(widths=(16, 32, 64, 128), blocks: int = 2):
    """ResNet-18 layout, narrow (about 0.7 M parameters): 64x64 RGB, BatchNorm, residual Add, 10 classes.

    Larger and deeper than the other zoo models (20 convolutions); not in ZOO, so CI does not train it:
    benchmarks/gpu.py exports it to measure GPU against CPU on a realistic depth.
    """
    import keras
    from keras import layers

    def conv_bn(x, filters, stride, name, relu=True):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x) if relu else x

    inp = keras.Input((64, 64, 3), name="pixels")
    x = conv_bn(inp, widths[0], 1, "stem")
    for stage, filters in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage and not block else 1
            name = f"s{stage}b{block}"
            y = conv_bn(x, filters, stride, f"{name}_a")
            y = conv_bn(y, filters, 1, f"{name}_b", relu=False)
            if stride != 1 or x.shape[-1] != filters:
                x = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
            x = layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="resnet_style")


def digits_as(shape, x: np.ndarray) -> np.ndarray:
    """MNIST digits [N,28,28] resized (nearest) and repeated to [N,H,W,C] floats in [0,1]."""
    h, w, c = shape
    rows, cols = np.arange(h) * 28 // h, np.arange(w) * 28 // w
    return np.repeat(x[:, rows][:, :, cols][..., None], c, axis=-1).astype("float32") / 255.0


def train_briefly(model, x: np.ndarray, y: np.ndarray, seed: int = 0):
    """A few seconds of training, so that weights and BatchNorm statistics are learnt, not initial,
    and predicted classes are not near-ties that float32 rounding could flip."""
    import keras

    keras.utils.set_random_seed(seed)
    classes = model.outputs[0].shape[-1]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(digits_as(model.inputs[0].shape[1:], x), y % classes, epochs=15, batch_size=32, verbose=0)
    return model


ZOO = {"functional_bn": functional_bn, "rgb_small": rgb_small}
