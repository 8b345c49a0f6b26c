"""More small architectures for the coverage table (benchmarks/architectures.py registers them): segmentation,
atrous, detection-style heads, two inputs, squeeze-excitation, conv + attention, WaveNet-style 1-D, volumes,
grouped convolutions, an autoencoder, channels_first. Random weights; each builder returns an uncompiled model."""
from __future__ import annotations


def _k():
    import keras
    from keras import layers

    return keras, layers


def fcn():
    """FCN segmentation: conv-pool encoder, a 1x1 classifier, bilinear UpSampling2D back to 64x64."""
    keras, layers = _k()
    inp = keras.Input((64, 64, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="f_conv1")(inp)
    x = layers.MaxPooling2D(name="f_pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="f_conv2")(x)
    x = layers.MaxPooling2D(name="f_pool2")(x)
    x = layers.Conv2D(3, 1, name="f_classes")(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="f_up")(x)
    return keras.Model(inp, layers.Softmax(name="f_mask")(x), name="fcn")


def deeplab_atrous():
    """DeepLab-style: atrous (dilated) convolutions in parallel (ASPP), concatenated, 1x1, upsampled."""
    keras, layers = _k()
    inp = keras.Input((64, 64, 3), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="d_stem")(inp)
    branches = [layers.Conv2D(8, 1, name="d_aspp1")(x)] + [
        layers.Conv2D(8, 3, padding="same", dilation_rate=r, name=f"d_aspp_r{r}")(x) for r in (2, 4, 6)]
    x = layers.Concatenate(name="d_concat")(branches)
    x = layers.Conv2D(4, 1, name="d_classes")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear", name="d_up")(x)
    return keras.Model(inp, x, name="deeplab_atrous")


def two_heads():
    """Detection-style: one backbone, two heads (class scores per cell, box offsets per cell): two model outputs."""
    keras, layers = _k()
    inp = keras.Input((64, 64, 3), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="t_back1")(inp)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="t_back2")(x)
    cls = layers.Conv2D(3, 1, activation="sigmoid", name="t_cls")(x)
    box = layers.Conv2D(4, 1, name="t_box")(x)
    return keras.Model(inp, [cls, box], name="two_heads")


def two_inputs():
    """An image and a 10-value vector, joined after the convolutions."""
    keras, layers = _k()
    img, meta = keras.Input((32, 32, 3), name="image"), keras.Input((10,), name="meta")
    x = layers.Conv2D(8, 3, activation="relu", name="i_conv")(img)
    x = layers.GlobalAveragePooling2D(name="i_gap")(x)
    x = layers.Concatenate(name="i_join")([x, layers.Dense(8, name="i_meta")(meta)])
    return keras.Model([img, meta], layers.Dense(2, activation="softmax", name="i_probs")(x), name="two_inputs")


def squeeze_excitation():
    """A conv block with squeeze-and-excitation: GAP, Dense down, Dense sigmoid, channel-wise Multiply."""
    keras, layers = _k()
    inp = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="s_conv")(inp)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="s_squeeze")(x)
    s = layers.Dense(4, activation="relu", name="s_down")(s)
    s = layers.Dense(16, activation="sigmoid", name="s_up")(s)
    x = layers.Multiply(name="s_scale")([x, s])
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="s_conv2")(x)
    x = layers.GlobalAveragePooling2D(name="s_gap")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="s_probs")(x), name="squeeze_excitation")


def conv_attention():
    """Conv stem, then multi-head self-attention over the 8x8 positions, then a classifier."""
    keras, layers = _k()
    inp = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="h_conv1")(inp)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="h_conv2")(x)
    seq = layers.Reshape((64, 16), name="h_tokens")(x)
    att = layers.MultiHeadAttention(2, 8, name="h_attention")(seq, seq)
    x = layers.LayerNormalization(name="h_norm")(layers.Add(name="h_residual")([seq, att]))
    x = layers.GlobalAveragePooling1D(name="h_gap")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="h_probs")(x), name="conv_attention")


def wavenet_1d():
    """WaveNet-style 1-D: causal dilated Conv1D with gated activations and residual adds, 2048 samples."""
    keras, layers = _k()
    inp = keras.Input((2048, 1), name="wave")
    x = layers.Conv1D(8, 1, name="w_in")(inp)
    for r in (1, 2, 4, 8):
        tanh = layers.Conv1D(8, 2, padding="causal", dilation_rate=r, activation="tanh", name=f"w_tanh{r}")(x)
        gate = layers.Conv1D(8, 2, padding="causal", dilation_rate=r, activation="sigmoid", name=f"w_gate{r}")(x)
        x = layers.Add(name=f"w_res{r}")([x, layers.Multiply(name=f"w_gated{r}")([tanh, gate])])
    x = layers.GlobalAveragePooling1D(name="w_gap")(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="w_probs")(x), name="wavenet_1d")


def volume_3d():
    """A volumetric encoder-decoder (medical-style): Conv3D down, Conv3DTranspose up, 16x32x32 of one channel."""
    keras, layers = _k()
    inp = keras.Input((16, 32, 32, 1), name="volume")
    x = layers.Conv3D(4, 3, padding="same", activation="relu", name="m_conv1")(inp)
    x = layers.Conv3D(8, 3, strides=2, padding="same", activation="relu", name="m_down")(x)
    x = layers.Conv3DTranspose(4, 2, strides=2, name="m_up")(x)
    return keras.Model(inp, layers.Conv3D(2, 1, activation="softmax", name="m_mask")(x), name="volume_3d")


def grouped_mobile():
    """ResNeXt-style grouped convolution (groups=4) and a MobileNet-style depthwise-separable block with ReLU6."""
    keras, layers = _k()
    inp = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", name="g_stem")(inp)
    x = layers.Conv2D(16, 3, padding="same", groups=4, activation="relu", name="g_grouped")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="g_dw")(x)
    x = layers.BatchNormalization(name="g_bn")(x)
    x = layers.ReLU(6.0, name="g_relu6")(x)
    x = layers.Conv2D(24, 1, name="g_pw")(x)
    x = layers.GlobalAveragePooling2D(name="g_gap")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="g_probs")(x), name="grouped_mobile")


def autoencoder():
    """A convolutional autoencoder: strided convs down, Conv2DTranspose up, sigmoid pixels out (28x28x1)."""
    keras, layers = _k()
    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="e_down1")(inp)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="e_down2")(x)
    x = layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu", name="e_up1")(x)
    x = layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid", name="e_up2")(x)
    return keras.Model(inp, x, name="autoencoder")


def legacy_cnn():
    """The reference MNIST layout, saved as legacy HDF5 (.h5) by the coverage run."""
    keras, layers = _k()
    return keras.Sequential([
        keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu", name="conv2d"),
        layers.MaxPooling2D(name="pool"), layers.Conv2D(64, 3, activation="relu", name="conv2d_1"),
        layers.Flatten(name="flat"), layers.Dense(10, activation="softmax", name="probs")], name="legacy_cnn")


def channels_first():
    """Conv2D with data_format='channels_first' (NCHW)."""
    keras, layers = _k()
    inp = keras.Input((3, 32, 32), name="image")
    x = layers.Conv2D(8, 3, data_format="channels_first", name="c_conv")(inp)
    x = layers.GlobalAveragePooling2D(data_format="channels_first", name="c_gap")(x)
    return keras.Model(inp, layers.Dense(2, name="c_probs")(x), name="channels_first")
