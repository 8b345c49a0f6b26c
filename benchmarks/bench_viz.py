"""Grid of the 32 first-layer maps to a PNG: the seed tutorial's subplot loop vs viz.save_grid.

    pytest benchmarks/bench_viz.py --benchmark-only      # side by side, group "grid-png-conv2d"

Both draw the same real maps: conv2d of MNIST test digit 0, from the reference model's
artifacts (benchmarks/conftest.py) through the onnx runtime.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.data.mnist import shipped_digits

LAYER = "conv2d"
GROUP = "grid-png-conv2d"


@pytest.fixture(scope="module")
def first_layer_maps(bench_artifacts) -> tuple[np.ndarray, str]:
    """(conv2d maps [26, 26, 32] of test digit 0 through the onnx runtime, where they came from)."""
    import runtime

    with runtime.load(bench_artifacts) as model:
        return model.run(shipped_digits()[0][0], outputs=[LAYER])[LAYER][0], "artifacts (onnx)"


def seed_tutorial_grid(maps: np.ndarray, path: Path) -> None:
    """The seed tutorial: one pyplot subplot + imshow per map, then savefig."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure(figsize=(8, 4))
    for i in range(32):
        plt.subplot(4, 8, i + 1)
        plt.imshow(maps[..., i], cmap="gray")
        plt.axis("off")
    plt.savefig(path)
    plt.close()


@pytest.mark.benchmark(group=GROUP)
def test_seed_subplot_loop(benchmark, first_layer_maps, tmp_path):
    maps, source = first_layer_maps
    benchmark.extra_info["maps_from"] = source
    path = tmp_path / "seed.png"
    benchmark.pedantic(seed_tutorial_grid, args=(maps, path), rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group=GROUP)
def test_viz_save_grid(benchmark, first_layer_maps, tmp_path):
    from viz import save_grid

    maps, source = first_layer_maps
    benchmark.extra_info["maps_from"] = source
    path = tmp_path / "conv2d.png"
    benchmark.pedantic(save_grid, args=(maps, path), rounds=50, iterations=1, warmup_rounds=2)
