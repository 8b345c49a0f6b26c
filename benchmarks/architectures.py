"""Small models of the architectures beyond Keras Applications that people train every day, with random
weights, built from this code: the source of the second coverage table and of the tests that export them.

Each builder returns an uncompiled keras.Model; ARCHITECTURES names them with what they exercise.
"""
from __future__ import annotations

from typing import Callable, NamedTuple


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


class Architecture(NamedTuple):
    name: str
    build: Callable
    exercises: str


ARCHITECTURES = (
    Architecture("audio_1d", audio_1d, "Conv1D, SeparableConv1D, DepthwiseConv1D, Conv1DTranspose (NWC)"),
    Architecture("video_3d", video_3d, "Conv3D, Conv3DTranspose (NDHWC)"),
    Architecture("time_distributed", time_distributed, "TimeDistributed Conv2D and SeparableConv2D (NTHWC)"),
    Architecture("uint8_input", uint8_input, "uint8 model input with Rescaling inside"),
)
