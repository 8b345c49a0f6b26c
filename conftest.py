"""Environment shared by tests/ and benchmarks/ (pytest loads this file for both)."""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

# Tests, benchmarks and CI read the exact Keras mnist.npz beside the checkout (../shared/data);
# users keep the real lookup order of runtime.mnist.
SHARED_MNIST = Path(__file__).resolve().parent.parent / "shared" / "data" / "mnist.npz"
if "MNIST_NPZ" not in os.environ and SHARED_MNIST.is_file():
    os.environ["MNIST_NPZ"] = str(SHARED_MNIST)
