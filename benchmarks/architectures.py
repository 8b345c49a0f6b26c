"""Small models of the architectures beyond Keras Applications that people train every day, with random
weights, built from this code: the source of the second coverage table and of the tests that export them.

Each builder returns an uncompiled keras.Model; ARCHITECTURES names them with what they exercise.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from benchmarks import architectures_more as more


def audio_1d():
    """Conv1D audio classifier on 4000 samples of one channel: strided Conv1D, separable and depthwise 1-D."""
    import keras
    from keras import layers

    inp = keras.Input((4000, 1), name="wave")
    x = layers.Conv1D(8, 9, strides=4, activation="relu", name="a_conv")(inp)
    x = layers.MaxPooling1D(4, name="a_pool")(x)
    x = layers.SeparableConv1D(16, 5, padding="same", activation="relu", name="a_sep")(x)
    x = layers.DepthwiseConv1D(3, padding="same", name="a_dw")(x)
    x = layers.Conv1DTranspose(8, 4, strides=2, name="a_up")(x)
    x = layers.GlobalAveragePooling1D(name="a_gap")(x)
    return keras.Model(inp, layers.Dense(5, activation="softmax", name="a_probs")(x), name="audio_1d")


def video_3d():
    """Conv3D video classifier on 8 frames of 32x32 RGB, with a Conv3DTranspose."""
    import keras
    from keras import layers

    inp = keras.Input((8, 32, 32, 3), name="clip")
    x = layers.Conv3D(8, 3, strides=(1, 2, 2), padding="same", activation="relu", name="v_conv")(inp)
    x = layers.MaxPooling3D((2, 2, 2), name="v_pool")(x)
    x = layers.Conv3D(16, 3, padding="same", activation="relu", name="v_conv_2")(x)
    x = layers.Conv3DTranspose(4, 2, strides=2, name="v_up")(x)
    x = layers.GlobalAveragePooling3D(name="v_gap")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="v_probs")(x), name="video_3d")


def time_distributed():
    """TimeDistributed(Conv2D) over 4 frames of 32x32 RGB, then an LSTM over the frame features."""
    import keras
    from keras import layers

    inp = keras.Input((4, 32, 32, 3), name="frames")
    x = layers.TimeDistributed(layers.Conv2D(8, 3, strides=2, activation="relu"), name="td_conv")(inp)
    x = layers.TimeDistributed(layers.SeparableConv2D(8, 3, padding="same"), name="td_sep")(x)
    x = layers.TimeDistributed(layers.GlobalAveragePooling2D(), name="td_gap")(x)
    x = layers.LSTM(8, name="td_lstm")(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="td_probs")(x), name="time_distributed")


def uint8_input():
    """Input(dtype="uint8") with Rescaling inside: the model takes raw pixels as declared."""
    import keras
    from keras import layers

    inp = keras.Input((32, 32, 3), dtype="uint8", name="pixels")
    x = layers.Rescaling(1 / 255, name="u_rescale")(inp)
    x = layers.Conv2D(8, 3, activation="relu", name="u_conv")(x)
    x = layers.DepthwiseConv2D(3, name="u_dw")(x)
    x = layers.GlobalAveragePooling2D(name="u_gap")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="u_probs")(x), name="uint8_input")


def unet(size: int | None = None):
    """Fully convolutional U-Net (two levels, skip connections, Conv2DTranspose up); free H, W when size is None."""
    import keras
    from keras import layers

    def block(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_1")(x)
        return layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_2")(x)

    inp = keras.Input((size, size, 3), name="image")
    e1 = block(inp, 8, "enc1")
    e2 = block(layers.MaxPooling2D(name="pool1")(e1), 16, "enc2")
    mid = block(layers.MaxPooling2D(name="pool2")(e2), 32, "mid")
    d2 = layers.Conv2DTranspose(16, 2, strides=2, name="up2")(mid)
    d2 = block(layers.Concatenate(name="skip2")([d2, e2]), 16, "dec2")
    d1 = layers.Conv2DTranspose(8, 2, strides=2, name="up1")(d2)
    d1 = block(layers.Concatenate(name="skip1")([d1, e1]), 8, "dec1")
    out = layers.Conv2D(2, 1, activation="softmax", name="mask")(d1)
    return keras.Model(inp, out, name=f"unet_{size or 'free'}")


def custom_layer():
    """A functional model with a custom layer (benchmarks/custom_layers.py ConvBlock) holding two convolutions."""
    import keras
    from keras import layers

    from benchmarks.custom_layers import ConvBlock

    inp = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(4, 3, name="stem")(inp)
    x = ConvBlock(8, name="block")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="probs")(x), name="custom_layer")


def subclassed():
    """A subclassed keras.Model (benchmarks/custom_layers.py SmallNet), built on 32x32 RGB."""
    import keras

    from benchmarks.custom_layers import SmallNet

    net = SmallNet(name="subclassed")
    net(keras.ops.zeros((1, 32, 32, 3)))
    return net


def shared_block():
    """A nested Sequential block called twice (shared weights): every call site is its own output."""
    import keras
    from keras import layers

    block = keras.Sequential([layers.Conv2D(8, 3, padding="same", name="bc1"), layers.ReLU(name="bc_relu"),
                              layers.Conv2D(8, 3, padding="same", name="bc2")], name="block")
    inp = keras.Input((32, 32, 8), name="image")
    x = block(block(inp))
    x = layers.Conv2D(4, 3, name="head")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="probs")(x), name="shared_block")


def mixed_float16(depth: int = 8, size: int = 64):
    """mixed_float16 (float16 compute, float32 weights), depth x (Conv + BatchNorm + ReLU) at 64x64, the
    softmax in float32 as Keras recommends."""
    import keras
    from keras import layers

    inp = keras.Input((size, size, 3), name="image")
    x = inp
    for i in range(depth):
        x = layers.Conv2D(16, 3, padding="same", use_bias=False, dtype="mixed_float16", name=f"mp_conv{i}")(x)
        x = layers.BatchNormalization(dtype="mixed_float16", name=f"mp_bn{i}")(x)
        x = layers.ReLU(dtype="mixed_float16", name=f"mp_relu{i}")(x)
    x = layers.GlobalAveragePooling2D(dtype="mixed_float16", name="mp_gap")(x)
    out = layers.Dense(5, activation="softmax", dtype="float32", name="mp_probs")(x)
    return keras.Model(inp, out, name="mixed_float16")


class Architecture(NamedTuple):
    name: str
    build: Callable
    exercises: str
    refused: str = ""  # refused by design: the words the one-line refusal says; "" when it must export
    suffix: str = ".keras"  # the file format the model is saved in


ARCHITECTURES = (
    Architecture("audio_1d", audio_1d, "Conv1D, SeparableConv1D, DepthwiseConv1D, Conv1DTranspose (NWC)"),
    Architecture("video_3d", video_3d, "Conv3D, Conv3DTranspose (NDHWC)"),
    Architecture("time_distributed", time_distributed, "TimeDistributed Conv2D and SeparableConv2D (NTHWC)"),
    Architecture("uint8_input", uint8_input, "uint8 model input with Rescaling inside"),
    Architecture("unet_free", unet, "fully convolutional U-Net, free H and W (None, None, 3)"),
    Architecture("unet_64", lambda: unet(64), "the same U-Net at a fixed 64x64"),
    Architecture("custom_layer", custom_layer, "custom layer holding two convs (`--import`)"),
    Architecture("subclassed", subclassed, "subclassed keras.Model (`--import`)"),
    Architecture("mixed_float16", mixed_float16, "mixed_float16, 8 x (Conv + BN + ReLU) at 64x64"),
    Architecture("shared_block", shared_block, "nested Sequential block called twice (shared weights)"),
    Architecture("fcn", more.fcn, "FCN segmentation, 1x1 classifier, bilinear UpSampling2D"),
    Architecture("deeplab_atrous", more.deeplab_atrous, "DeepLab-style atrous convolutions (ASPP)"),
    Architecture("two_heads", more.two_heads, "detection-style: two model outputs (class and box maps)"),
    Architecture("two_inputs", more.two_inputs, "image + 10-value vector", refused="model has 2 inputs"),
    Architecture("squeeze_excitation", more.squeeze_excitation, "squeeze-and-excitation block"),
    Architecture("conv_attention", more.conv_attention, "conv stem + MultiHeadAttention hybrid"),
    Architecture("wavenet_1d", more.wavenet_1d, "causal dilated Conv1D, gated, residual"),
    Architecture("volume_3d", more.volume_3d, "volumetric Conv3D encoder-decoder, one channel"),
    Architecture("grouped_mobile", more.grouped_mobile, "grouped Conv2D (groups=4), depthwise-separable, ReLU6"),
    Architecture("autoencoder", more.autoencoder, "conv autoencoder, Conv2DTranspose decoder"),
    Architecture("legacy_h5", more.legacy_cnn, "the reference layout saved as legacy HDF5", suffix=".h5"),
    Architecture("channels_first", more.channels_first, "Conv2D data_format='channels_first'",
                 refused="data_format='channels_first'"),
)
