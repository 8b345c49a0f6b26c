"""Publishing: --force replaces only pure artifacts folders; nothing that appeared during the export is deleted;
races, full disks and SIGTERM end in one line with no temporary folder left."""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from export import pipeline
from export.cli import main
from export.pipeline import ExportOptions, export_model
from runtime.artifacts import atomic
from runtime.cli.process import run_cli
from runtime.errors import ExportError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shipped_digits_only(monkeypatch, tmp_path):
    """Verify on the 64 shipped digits: these tests are about publishing, not accuracy."""
    monkeypatch.delenv("MNIST_NPZ", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]  # .art.tmp-*, .art.old-*


def cli_error(capsys, *argv) -> str:
    assert run_cli(main, list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_force_replaces_only_folders_holding_nothing_but_listed_files(capsys, tmp_path, reference_artifacts,
                                                                      reference_model_path):
    webapp = tmp_path / "webapp"
    (webapp / "src").mkdir(parents=True)
    (webapp / "manifest.json").write_text('{"name": "my web app", "icons": []}')  # a PWA manifest
    (webapp / "src" / "app.js").write_text("years of work")
    stale = Path(shutil.copytree(reference_artifacts, tmp_path / "stale"))
    (stale / "saved_model" / "notes.txt").write_text("mine")
    linked = Path(shutil.copytree(reference_artifacts, tmp_path / "linked"))
    (linked / "data").symlink_to(webapp)
    before = snapshot(tmp_path)
    for folder, message in [(webapp, "is not one"), (stale, "also holds ['saved_model/notes.txt']"),
                            (linked, "also holds ['data']")]:
        err = cli_error(capsys, "--model", str(reference_model_path), "--out", str(folder), "--force")
        assert message in err and "--force replaces only" in err
    assert snapshot(tmp_path) == before and hidden(tmp_path) == []


def test_a_folder_appearing_during_the_export_is_left_alone(tmp_path, reference_model_path, shipped_digits_only,
                                                            monkeypatch):
    out = tmp_path / "art"
    real_verify = pipeline.verify

    def someone_creates_out(*args, **kwargs):
        (out / "src").mkdir(parents=True)
        (out / "src" / "app.js").write_text("created while the export ran")
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(pipeline, "verify", someone_creates_out)
    with pytest.raises(ExportError, match="appeared while this export ran.*published nothing"):
        export_model(reference_model_path, out)
    assert snapshot(out) == {"src/app.js": b"created while the export ran"} and hidden(tmp_path) == []


def test_two_publishers_racing_end_in_one_line_and_leave_nothing_behind(tmp_path, reference_artifacts,
                                                                        reference_model_path, shipped_digits_only,
                                                                        monkeypatch):
    out = Path(shutil.copytree(reference_artifacts, tmp_path / "art"))
    rival = Path(shutil.copytree(reference_artifacts, tmp_path / ".art.tmp-rival"))
    (rival / "manifest.json").write_text((rival / "manifest.json").read_text().replace('"created": "', '"created": "R'))
    real_rename = atomic.rename_noreplace

    def rival_publishes_first(src, dst):
        if Path(dst) == out and Path(src).name.startswith(".art.tmp-") and Path(src) != rival:
            pipeline._publish(rival, out, force=True)  # the other export wins the race just now
        return real_rename(src, dst)

    monkeypatch.setattr(atomic, "rename_noreplace", rival_publishes_first)
    with pytest.raises(ExportError, match="appeared while this export ran"):
        export_model(reference_model_path, out, ExportOptions(force=True))
    assert json.loads((out / "manifest.json").read_text())["created"].startswith("R")  # the winner's, complete
    assert hidden(tmp_path) == []  # no .art.old-* and no .art.tmp-* left


def test_full_disk_is_one_line_and_leaves_no_temp_folder(tmp_path, reference_artifacts, reference_model_path,
                                                         shipped_digits_only):
    out = Path(shutil.copytree(reference_artifacts, tmp_path / "art"))
    before = snapshot(out)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # no file may grow past 100 kB: the disk is "full"
    try:
        with pytest.raises(ExportError, match="File too large.*nothing published"):
            export_model(reference_model_path, out, ExportOptions(force=True))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert snapshot(out) == before and hidden(tmp_path) == []


def test_sigterm_during_export_cleans_up_like_ctrl_c(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MNIST_NPZ"} | {"KERAS_HOME": str(tmp_path / "keras")}
    proc = subprocess.Popen([sys.executable, "-m", "export", "--out", str(tmp_path / "art")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not hidden(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the temporary folder exists
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().endswith("interrupted"), err[-500:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keras"]  # no temp folder, nothing published
