"""replace_dir, through which every folder writer swaps its result in: on a real file system, a target swapped for
a foreign folder or a symbolic link after the caller's check is put back intact; a failure or Ctrl-C in the middle
leaves the previous target and no temporary; a target that appears meanwhile is refused."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from export import pipeline
from runtime.artifacts import atomic
from runtime.artifacts.atomic import atomic_dir, build_dir, replace_dir, umask
from runtime.errors import DataError, ExportError, TargetChanged
from runtime.jobs.store import NpzWriter, ZarrWriter


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def make(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def only_mine(folder: Path) -> None:
    """The caller's check: a folder is replaceable when it holds mine.txt (or nothing)."""
    if any(folder.iterdir()) and not (folder / "mine.txt").is_file():
        raise DataError("not mine")


@pytest.fixture
def swap_before_moving_aside(monkeypatch):
    """After the caller's check and before replace_dir moves target aside, put `by(target)` there instead;
    returns where the original went."""
    def install(target: Path, by) -> Path:
        real, moved = atomic.rename_noreplace, target.with_name("original")

        def swapping(src, dst):
            if Path(src) == target and not moved.exists():
                os.rename(target, moved)
                by(target)
            return real(src, dst)

        monkeypatch.setattr(atomic, "rename_noreplace", swapping)
        return moved

    return install


def test_a_new_target_and_a_replaced_one(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target, replaceable=only_mine) as build:
        assert build.parent == tmp_path and build.name.startswith(".out.tmp-")
        assert stat.S_IMODE(build.stat().st_mode) == 0o777 & ~umask()  # not mkdtemp's 0700
        (build / "mine.txt").write_text("1")
    with atomic_dir(target, replaceable=only_mine) as build:
        (build / "mine.txt").write_text("2")
    assert snapshot(target) == {"mine.txt": b"2"} and hidden(tmp_path) == []


def test_without_replaceable_an_existing_target_is_never_replaced(tmp_path):
    target = make(tmp_path / "out", {"mine.txt": "keep"})
    with pytest.raises(TargetChanged, match="appeared while it was being written") as caught, \
            atomic_dir(target) as build:
        (build / "mine.txt").write_text("new")
    assert caught.value.appeared and caught.value.kept is None
    assert snapshot(target) == {"mine.txt": b"keep"} and hidden(tmp_path) == []


def test_a_foreign_folder_swapped_in_after_the_check_is_put_back_intact(tmp_path, swap_before_moving_aside):
    target = make(tmp_path / "out", {"mine.txt": "old"})
    only_mine(target)  # the caller's check passes ...
    swap_before_moving_aside(target, lambda t: make(t, {"thesis.tex": "years of work"}))  # ... then this happens
    with pytest.raises(DataError, match="not mine"), atomic_dir(target, replaceable=only_mine) as build:
        (build / "mine.txt").write_text("new")
    assert snapshot(target) == {"thesis.tex": b"years of work"}
    assert hidden(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["original", "out"]


def test_a_symlink_swapped_in_after_the_check_is_put_back_and_its_folder_kept(tmp_path, swap_before_moving_aside):
    elsewhere = make(tmp_path / "elsewhere", {"mine.txt": "looks replaceable, but is not here"})
    target = make(tmp_path / "out", {"mine.txt": "old"})
    swap_before_moving_aside(target, lambda t: t.symlink_to(elsewhere))
    with pytest.raises(TargetChanged, match="symbolic link"), atomic_dir(target, replaceable=only_mine) as build:
        (build / "mine.txt").write_text("new")
    assert target.is_symlink() and os.readlink(target) == str(elsewhere)
    assert snapshot(elsewhere) == {"mine.txt": b"looks replaceable, but is not here"} and hidden(tmp_path) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError(28, "No space left on device")])
@pytest.mark.parametrize("when", ["check", "moved aside", "final rename"])
def test_a_failure_or_ctrl_c_in_the_middle_restores_the_target(tmp_path, monkeypatch, when, error):
    target = make(tmp_path / "out", {"mine.txt": "old"})
    real = atomic.rename_noreplace

    def failing_check(folder: Path) -> None:
        raise error

    def failing_rename(src, dst):
        if when == "final rename" and Path(src).name.startswith(".out.tmp-"):
            raise error
        real(src, dst)
        if when == "moved aside" and Path(src) == target:  # interrupted just after the rename returned
            raise error

    monkeypatch.setattr(atomic, "rename_noreplace", failing_rename)
    check = failing_check if when == "check" else only_mine
    with pytest.raises(error if isinstance(error, type) else OSError), atomic_dir(target, replaceable=check) as build:
        (build / "mine.txt").write_text("new")
    assert snapshot(target) == {"mine.txt": b"old"} and hidden(tmp_path) == []


def test_ctrl_c_while_building_leaves_no_temporary(tmp_path):
    target = make(tmp_path / "out", {"mine.txt": "old"})
    with pytest.raises(KeyboardInterrupt), atomic_dir(target, replaceable=only_mine) as build:
        (build / "mine.txt").write_text("half")
        raise KeyboardInterrupt
    assert snapshot(target) == {"mine.txt": b"old"} and hidden(tmp_path) == []


def test_a_target_that_appears_meanwhile_is_refused_and_left_alone(tmp_path, monkeypatch):
    target = make(tmp_path / "out", {"mine.txt": "old"})
    real = atomic.rename_noreplace

    def another_writer_publishes_first(src, dst):
        if Path(dst) == target and not target.exists():
            make(target, {"theirs.txt": "newer"})
        real(src, dst)

    monkeypatch.setattr(atomic, "rename_noreplace", another_writer_publishes_first)
    with pytest.raises(TargetChanged, match="appeared") as caught, atomic_dir(target, replaceable=only_mine) as build:
        (build / "mine.txt").write_text("new")
    assert caught.value.appeared
    # theirs stays; the folder that was checked and meant to go has gone, as the caller asked
    assert snapshot(target) == {"theirs.txt": b"newer"} and hidden(tmp_path) == []


def test_a_folder_that_cannot_go_back_is_reported_where_it_is_kept(tmp_path):
    target = make(tmp_path / "out", {"mine.txt": "old"})

    def check_then_someone_writes_target(folder: Path) -> None:
        make(target, {"theirs.txt": "took the place"})
        raise DataError("not mine")

    build = build_dir(target)
    with pytest.raises(TargetChanged, match="kept at") as caught:
        replace_dir(build, target, replaceable=check_then_someone_writes_target)
    assert snapshot(target) == {"theirs.txt": b"took the place"}
    assert snapshot(caught.value.kept) == {"mine.txt": b"old"}  # nothing lost: where it is is in the message


def test_export_puts_back_a_folder_swapped_in_after_its_check(tmp_path, swap_before_moving_aside):
    out = make(tmp_path / "art", {})  # empty: replaceable with force
    build = make(tmp_path / ".art.tmp-x", {"manifest.json": "{}"})
    swap_before_moving_aside(out, lambda t: make(t, {"app.js": "years of work"}))
    with pytest.raises(ExportError, match="`force=True` replaces only artifacts folders.*holds no manifest.json"):
        pipeline._publish(build, out, force=True)
    assert snapshot(out) == {"app.js": b"years of work"} and hidden(tmp_path) == [".art.tmp-x"]  # export's to remove


def test_zarr_writer_puts_back_a_folder_swapped_in_after_its_check(tmp_path, swap_before_moving_aside):
    out = tmp_path / "acts.zarr"
    with ZarrWriter(out, 2, 2, {}) as writer:  # an existing store, replaced by the next one
        writer.append({"a": np.zeros((2, 3), np.float32)})
        writer.commit()
    with ZarrWriter(out, 2, 2, {}) as writer:
        writer.append({"a": np.ones((2, 3), np.float32)})
        swap_before_moving_aside(out, lambda t: make(t, {"notes.txt": "mine"}))
        with pytest.raises(DataError, match="no longer a Zarr store"):
            writer.commit()
    assert snapshot(out) == {"notes.txt": b"mine"} and hidden(tmp_path) == []


def test_npz_writer_never_replaces_a_folder_put_at_its_path(tmp_path):
    out = tmp_path / "acts.npz"
    with NpzWriter(out, 2) as writer:
        writer.append({"a": np.ones((2, 3), np.float32)})
        make(out, {"notes.txt": "mine"})  # appears after check_out: os.replace refuses a folder
        with pytest.raises(DataError, match="cannot write"):
            writer.commit()
    assert snapshot(out) == {"notes.txt": b"mine"} and hidden(tmp_path) == []
