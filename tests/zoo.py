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
