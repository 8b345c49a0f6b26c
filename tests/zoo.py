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


# Small stand-ins for the Keras Applications families, random weights (the CI subset of
# benchmarks/applications.py, which runs the real families).

def transfer_mobilenet():
    """The usual fine-tuning shape: a MobileNetV2 base nested in Sequential, plus a new head."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35)
    return keras.Sequential([keras.Input((32, 32, 3)), base, layers.GlobalAveragePooling2D(name="gap"),
                             layers.Dense(4, activation="softmax", name="head")], name="transfer")


def efficientnet_style():
    """EfficientNet's stem: Rescaling, then an adapted Normalization; MBConv with squeeze-excitation."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(2)
    norm = layers.Normalization(name="norm")
    norm.adapt(np.random.default_rng(0).uniform(0, 1, (64, 32, 32, 3)).astype("float32"))
    inp = keras.Input((32, 32, 3))
    x = norm(layers.Rescaling(1 / 255, name="rescale")(inp))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="swish", name="stem_conv")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dwconv")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.Activation("swish", name="dw_act")(x)
    se = layers.GlobalAveragePooling2D(keepdims=True, name="se_squeeze")(x)
    se = layers.Conv2D(4, 1, activation="swish", name="se_reduce")(se)
    se = layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(se)
    x = layers.Multiply(name="se_excite")([x, se])
    x = layers.Conv2D(24, 1, name="project_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="probs")(x), name="efficientnet_style")


def convnext_style():
    """ConvNeXt: Normalization of 0..255 pixels, patchify stem, 7x7 depthwise, LayerNorm, exact gelu, grouped conv."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inp = keras.Input((32, 32, 3))
    x = layers.Normalization(mean=[123.7, 116.3, 103.5], variance=[58.4 ** 2, 57.1 ** 2, 57.4 ** 2],
                             name="prestem")(inp)
    x = layers.Conv2D(16, 4, strides=4, name="stem")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="stem_ln")(x)
    y = layers.DepthwiseConv2D(7, padding="same", name="block_dw")(x)
    y = layers.LayerNormalization(epsilon=1e-6, name="block_ln")(y)
    y = layers.Dense(64, activation="gelu", name="block_pw1")(y)
    y = layers.Dense(16, name="block_pw2")(y)
    x = layers.Add(name="block_add")([x, y])
    x = layers.Conv2D(16, 3, padding="same", groups=4, name="grouped")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="probs")(x), name="convnext_style")


def inception_style():
    """Inception: parallel 1x1, 3x3, 5x5 and pooling branches, concatenated."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(4)
    inp = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, strides=2, activation="relu", name="stem")(inp)
    b1 = layers.Conv2D(8, 1, activation="relu", name="b1_1x1")(x)
    b2 = layers.Conv2D(8, 3, padding="same", activation="relu", name="b2_3x3")(
        layers.Conv2D(6, 1, activation="relu", name="b2_1x1")(x))
    b3 = layers.Conv2D(8, 5, padding="same", activation="relu", name="b3_5x5")(
        layers.Conv2D(4, 1, activation="relu", name="b3_1x1")(x))
    b4 = layers.Conv2D(8, 1, activation="relu", name="b4_1x1")(
        layers.MaxPooling2D(3, strides=1, padding="same", name="b4_pool")(x))
    x = layers.Concatenate(name="mixed")([b1, b2, b3, b4])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="probs")(x), name="inception_style")


def resnet_mini():
    """ResNet: conv-BN-ReLU, a residual block with a strided projection shortcut."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    inp = keras.Input((32, 32, 3))
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(
        layers.Conv2D(16, 3, padding="same", name="stem_conv")(inp)))
    y = layers.Conv2D(32, 3, strides=2, padding="same", name="res_conv1")(x)
    y = layers.ReLU(name="res_relu1")(layers.BatchNormalization(name="res_bn1")(y))
    y = layers.BatchNormalization(name="res_bn2")(layers.Conv2D(32, 3, padding="same", name="res_conv2")(y))
    shortcut = layers.BatchNormalization(name="short_bn")(layers.Conv2D(32, 1, strides=2, name="short_conv")(x))
    x = layers.ReLU(name="res_out")(layers.Add(name="res_add")([y, shortcut]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="probs")(x), name="resnet_mini")


APPLICATIONS = {f.__name__: f for f in (transfer_mobilenet, efficientnet_style, convnext_style, inception_style,
                                        resnet_mini)}


def chaotic(depth: int = 30, gain: float = 4.0):
    """A model as chaotic as EfficientNetV2L with random weights, at a fraction of the cost: 1x1 tanh
    convolutions with weight gain 4 (past the edge of chaos at 1) double a one-ulp change of the
    input every layer or two, so the last layers move by their whole range. Not trained: that is the point."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="tanh", name="first")(inp)
    for i in range(depth):
        x = layers.Conv2D(16, 1, activation="tanh", name=f"c{i}",
                          kernel_initializer=keras.initializers.RandomNormal(stddev=gain / 4))(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(10, activation="softmax", name="head",
                       kernel_initializer=keras.initializers.RandomNormal(stddev=gain))(x)
    return keras.Model(inp, out, name="chaotic")
