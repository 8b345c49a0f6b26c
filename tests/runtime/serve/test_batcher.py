"""runtime/serve/batcher.py on the real model: merging up to max_batch, carrying over, splitting back, errors."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.preprocess import to_batch
from runtime.serve.batcher import Batcher


def test_merges_up_to_max_batch_and_splits_back(reference_model, digits):
    x = to_batch(digits[0][:6], reference_model.input_spec)
    batcher = Batcher(reference_model, max_batch=4, max_delay_ms=300)

    async def main():
        parts = [x[0:2], x[2:5], x[5:6]]  # 2 + 3 > 4: the second is carried into the next batch, with the third
        return await asyncio.gather(*(batcher.run(p, ["conv2d", "dense_1"] if i else ["dense_1"])
                                      for i, p in enumerate(parts)))

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert (batcher.stats.batches, batcher.stats.images, batcher.stats.requests) == (2, 6, 3)
    expected = reference_model.run(x)
    assert list(results[0]) == ["dense_1"] and list(results[1]) == ["conv2d", "dense_1"]
    for result, (start, stop) in zip(results, [(0, 2), (2, 5), (5, 6)]):
        for name, got in result.items():
            assert np.array_equal(got, expected[name][start:stop]), (start, name)


def test_refuses_oversized_requests_and_runs_after_close_fail(reference_model, digits):
    x = to_batch(digits[0][:3], reference_model.input_spec)
    batcher = Batcher(reference_model, max_batch=2)
    with pytest.raises(InputError, match="at most 2 per request"):
        asyncio.run(batcher.run(x, ["dense_1"]))
    batcher.close()
    with pytest.raises(InputError, match="shutting down"):
        asyncio.run(batcher.run(x[:1], ["dense_1"]))
    with pytest.raises(InputError, match="`max_batch` >= 1"):
        Batcher(reference_model, max_batch=0)
