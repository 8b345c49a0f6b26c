"""One model used from many threads at once gives the serial results; TensorFlow thread settings are not silent."""
from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtime
from runtime.compare import compare_outputs, failures

THREADS = 8
RUNS_PER_THREAD = 12


def test_one_model_from_eight_threads_matches_serial_results(ref_model, digits):
    x = digits[0]
    # Each task is a different slice of digits, sizes 1..8, so that threads never run the same batch.
    tasks = [[(t * 7 + r * 5) % 56 for r in range(RUNS_PER_THREAD)] for t in range(THREADS)]
    size = lambda start: 1 + start % 8  # noqa: E731
    serial = {start: ref_model.run(x[start:start + size(start)]) for job in tasks for start in job}
    barrier = threading.Barrier(THREADS)

    def work(job: list[int]) -> list[tuple[int, dict]]:
        barrier.wait()  # all threads start together, to overlap as much as possible
        return [(start, ref_model.run(x[start:start + size(start)])) for start in job]

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for done in pool.map(work, tasks) for r in done]
    assert len(results) == THREADS * RUNS_PER_THREAD
    for start, got in results:
        assert not failures(compare_outputs(got, serial[start])), (
            f"digits {start}..: {failures(compare_outputs(got, serial[start]))}")


def test_streams_from_several_threads(ref_model, digits):
    x = digits[0]
    expected = ref_model.run(x, outputs=["conv2d_1"])["conv2d_1"]

    def stream(batch_size: int) -> np.ndarray:
        return np.concatenate([d["conv2d_1"] for d in ref_model.stream(x, batch_size, outputs=["conv2d_1"])])

    with ThreadPoolExecutor(4) as pool:
        for got in pool.map(stream, [3, 7, 16, 64]):
            assert not failures(compare_outputs({"c": got}, {"c": expected}))


def test_tf_threads_too_late_is_a_warning_naming_the_current_setting(reference_artifacts, loaded):
    import tensorflow as tf

    loaded(reference_artifacts, "tf").run(np.zeros((1, 28, 28), np.uint8))  # TensorFlow's pools now exist
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.warns(RuntimeWarning, match=r"threads=\d+ ignored: TensorFlow's thread pools are already initialised"
                                            r" in this process \(intra-op threads "):
        model = runtime.load(reference_artifacts, backend="tf", threads=current + 3)
    model.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asking for what is already set is not worth a warning
        runtime.load(reference_artifacts, backend="tf", threads=current or None).close()  # 0: TF's default


@pytest.mark.parametrize("workers", [1, 3])
def test_pipelined_consumes_everything_and_hands_back_a_workers_error(workers):
    from runtime.jobs.pipeline import Pipelined

    seen, lock = [], threading.Lock()

    def consume(item: int) -> None:
        with lock:
            seen.append(item)

    with Pipelined(consume, workers=workers) as pipe:
        for i in range(50):
            pipe.put(i)
    assert sorted(seen) == list(range(50)) and (workers > 1 or seen == list(range(50)))

    def fail_on_7(item: int) -> None:
        if item == 7:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with Pipelined(fail_on_7, workers=workers) as pipe:
            for i in range(50):
                pipe.put(i)
    assert not any(t.name.startswith("featuremaps-writer") for t in threading.enumerate())  # all joined
