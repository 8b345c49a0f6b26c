"""`--ray`: Ray Data map_batches over an actor pool on a local 2-CPU Ray runtime gives what the local path gives."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from runtime.cli.main import main
from runtime.cli.process import run_cli

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")


def test_an_unreachable_cluster_is_a_one_line_error_in_seconds(capsys, tmp_path, digits, reference_artifacts):
    if ray.is_initialized():  # connect() joins the running runtime instead
        pytest.skip("a Ray runtime is already running in this process")
    np.save(tmp_path / "x.npy", digits[0][:4])
    code = run_cli(main, ["stats", str(reference_artifacts), "--input", str(tmp_path / "x.npy"),
                          "--out", str(tmp_path / "s"), "--ray", "127.0.0.1:1"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in err and "ray start --head" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_sigterm_while_ray_runs_cleans_up_like_ctrl_c(tmp_path, reference_artifacts, many_images, signalled_run):
    """ray.init puts in its own SIGTERM handler (exit 15, no message): the run keeps the project's."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray runtime of its own
    code, err = signalled_run([reference_artifacts, "--input", many_images, "--out", tmp_path / "acts.zarr", "--ray"],
                              ready=lambda: list(tmp_path.glob(".acts.zarr.tmp-*/conv2d/c")), env=env)  # Ray runs
    assert code == 143 and err.strip().splitlines()[-1] == "interrupted", err[-1000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.npy"]


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray runtime with 2 CPUs (what `--ray` without an address starts), shut down afterwards."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def run(capfd, *argv) -> str:
    code = run_cli(main, [str(a) for a in argv])
    out, err = capfd.readouterr()  # file-descriptor level: Ray's C++ core worker writes to fd 2 directly
    assert code == 0, err
    assert "core_worker" not in err and "max_restarts" not in err, err  # Ray's own lines stay quiet without -v
    return out


def test_run_and_stats_on_ray_equal_the_local_path(local_ray, capfd, tmp_path, digits, reference_artifacts):
    import zarr

    np.save(tmp_path / "x.npy", digits[0][:40])
    common = [reference_artifacts, "--input", tmp_path / "x.npy", "--batch-size", 16]
    assert ", Ray, " in run(capfd, "run", *common, "--out", tmp_path / "ray.zarr", "--ray")
    run(capfd, "run", *common, "--out", tmp_path / "local.zarr")
    on_ray, local = (zarr.open_group(str(tmp_path / f), mode="r") for f in ("ray.zarr", "local.zarr"))
    for name in ("dense_1", "conv2d", "conv2d_1"):
        np.testing.assert_array_equal(on_ray[name][:], local[name][:])

    run(capfd, "stats", *common, "--out", tmp_path / "ray_stats", "--ray", "--k", "4")
    run(capfd, "stats", *common, "--out", tmp_path / "ray_graph", "--ray", "--k", "4", "--engine", "graph")
    run(capfd, "stats", *common, "--out", tmp_path / "local_stats", "--k", "4")
    for ray_folder in ("ray_stats", "ray_graph"):  # the numpy path and the stats graph on Ray
        a, b = (json.loads((tmp_path / f / "stats.json").read_text()) for f in (ray_folder, "local_stats"))
        for name in ("conv2d", "conv2d_1"):
            for x, y in zip(a["outputs"][name]["channels"], b["outputs"][name]["channels"]):
                assert x.keys() == y.keys() and x == pytest.approx(y, rel=1e-12)  # sums merged in another order
            assert a["outputs"][name]["histogram"] == b["outputs"][name]["histogram"]
            with np.load(tmp_path / ray_folder / "topk" / f"{name}.npz") as f, \
                    np.load(tmp_path / "local_stats" / "topk" / f"{name}.npz") as g:
                for key in ("index", "value", "maps", "images"):
                    np.testing.assert_array_equal(f[key], g[key])
        assert ((tmp_path / ray_folder / "sources.json").read_text()
                == (tmp_path / "local_stats" / "sources.json").read_text())


def test_verbose_lets_ray_log_and_is_off_by_default():
    from runtime.cli.main import parse_args
    from runtime.cli.run import input_options

    quiet = parse_args(["stats", "a", "--input", "x.npy", "--out", "s", "--ray"])
    loud = parse_args(["run", "a", "--input", "x.npy", "--out", "o.npz", "--ray", "-v"])
    assert input_options(quiet)["ray_logs"] is False and input_options(loud)["ray_logs"] is True
