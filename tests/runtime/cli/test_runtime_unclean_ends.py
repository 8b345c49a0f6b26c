"""Unclean ends of the runtime CLI: SIGTERM cleans up like Ctrl-C, a closed pipe ends quietly; one big run()."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import runtime.api
from runtime.cli.process import run_cli, terminate_as_interrupt

ROOT = Path(__file__).resolve().parents[3]


def test_sigterm_during_run_leaves_no_temp_files(tmp_path, reference_artifacts, many_images, signalled_run):
    code, err = signalled_run([reference_artifacts, "--input", many_images, "--out", tmp_path / "acts.npz", "--quiet"],
                              ready=lambda: writing(tmp_path))
    assert code == 143 and err.strip() == "interrupted", err[-500:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.npy"]  # no temp folder, no partial .npz


class SignalledInFinalizer:
    """Delivers a signal while its finalizer runs, where Python would only print what the handler raises."""

    def __init__(self, signum: int):
        self.signum = signum

    def __del__(self):
        signal.raise_signal(self.signum)
        sum(range(1000))  # Python code: the handler runs here, inside the finalizer


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("then", ["more work", "return"])
def test_a_signal_landing_in_a_finalizer_still_interrupts(capfd, sig, then):
    finished, hook = [], sys.unraisablehook
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}

    def work(argv):
        SignalledInFinalizer(sig)  # collected at once: the signal lands in __del__, which cannot raise
        if then == "more work":
            time.sleep(5)  # interrupted here
        finished.append(True)
        return 0

    assert run_cli(work, []) == 128 + sig and finished == ([True] if then == "return" else [])
    assert capfd.readouterr().err == "interrupted\n"  # and no "Exception ignored in ..." traceback
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # all put back
    assert sys.unraisablehook is hook and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `nohup` or `cmd &` leave it
    try:
        with terminate_as_interrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            sum(range(1000))
    finally:
        signal.signal(signal.SIGINT, previous)


def writing(folder: Path) -> bool:
    """Whether outputs are being written: a temporary file beside acts.npz, or one inside a temporary folder."""
    return any(p.name.endswith(".tmp") or (p.is_dir() and any(p.iterdir())) for p in folder.glob(".acts.npz*"))


def test_info_into_a_closed_pipe_ends_quietly(reference_artifacts):
    """`python -m runtime info artifacts | head -5`: the reader is gone before anything is written."""
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "info", str(reference_artifacts), "--backend", "onnx"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == "", err


def test_one_big_run_fills_outputs_chunk_by_chunk(ref_model, digits):
    """More images than one chunk: the same numbers as batch by batch, in preallocated arrays."""
    images = np.concatenate([digits[0]] * 5)[: runtime.api.CHUNK * 2 + 3]
    whole = ref_model.run(images)
    parts = [ref_model.run(images[i:i + 100]) for i in range(0, len(images), 100)]
    for name, array in whole.items():
        assert array.shape[0] == len(images) and array.flags.c_contiguous
        assert np.allclose(array, np.concatenate([p[name] for p in parts]), atol=1e-5)
    assert set(ref_model.run(images, outputs=["conv2d"])) == {"conv2d"}
