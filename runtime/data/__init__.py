"""Data sets: MNIST (the real Keras file, found or downloaded) and the digits shipped in this folder."""
