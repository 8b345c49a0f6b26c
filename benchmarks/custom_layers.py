"""User code as people write it: a custom layer holding convolutions and a subclassed model, registered with
keras.saving.register_keras_serializable. `python -m export --import benchmarks/custom_layers.py` loads them."""
from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="featuremaps_demo")
class ConvBlock(layers.Layer):
    """Two 3x3 convolutions with a ReLU between them, as one layer."""

    def __init__(self, filters: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = layers.Conv2D(filters, 3, padding="same", name="inner_conv")
        self.conv2 = layers.Conv2D(filters, 3, padding="same", name="inner_conv2")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.conv2.build((*input_shape[:-1], self.filters))

    def call(self, x):
        return self.conv2(keras.ops.relu(self.conv(x)))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="featuremaps_demo")
class SmallNet(keras.Model):
    """A subclassed classifier: two convolutions, pooling, a dense head."""

    def __init__(self, classes: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.c1 = layers.Conv2D(8, 3, name="c1")
        self.c2 = layers.Conv2D(8, 3, name="c2")
        self.pool = layers.GlobalAveragePooling2D(name="pool")
        self.head = layers.Dense(classes, activation="softmax", name="head")

    def call(self, x):
        return self.head(self.pool(self.c2(keras.ops.relu(self.c1(x)))))

    def get_config(self):
        return {"name": self.name, "classes": self.classes}
