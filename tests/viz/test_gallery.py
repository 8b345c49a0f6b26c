"""`python -m viz gallery`: the microscope site built from real `runtime stats` output of the reference model."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.cli.process import run_cli
from runtime.errors import ArtifactError, DataError
from viz import gallery


def make_stats(artifacts, images, out: Path, **options) -> Path:
    from runtime.jobs.stats import stats

    stats(str(artifacts), images, **options).write(out)
    return out


@pytest.fixture(scope="session")
def stats_folder(reference_stats):
    return reference_stats


@pytest.fixture(scope="session")
def site(tmp_path_factory, stats_folder):
    return gallery.write_gallery(stats_folder, tmp_path_factory.mktemp("gallery_site") / "site")


def test_site_has_an_index_row_and_a_page_per_layer_and_a_png_per_channel(site, stats_folder):
    stats = json.loads((stats_folder / "stats.json").read_text())
    index = (site / "index.html").read_text()
    assert set(stats["outputs"]) == {"conv2d", "conv2d_1"}
    for name, out in stats["outputs"].items():
        assert f'href="layers/{name}.html"' in index
        page = (site / "layers" / f"{name}.html").read_text()
        channels = out["shape"][2]
        assert page.count('<section class="channel') == channels
        pngs = sorted((site / "img" / name).glob("*.png"))
        assert len(pngs) == channels
        with Image.open(pngs[0]) as png:  # 2 rows (overlay, map) of k tiles of 28x28, 1-pixel gaps
            assert png.size == (3 * 29 - 1, 2 * 28 + 1) and png.mode == "RGB"
        # every statistic shown is the one in stats.json
        mean = out["channels"][5]["mean"]
        assert f"<dt>mean</dt><dd>{mean:.3g}</dd>" in page.split('id="c5"')[1].split("</section>")[0]
    assert len(re.findall(r"<tr>|<tr class", index)) == 1 + len(stats["outputs"])  # header + one per layer


def test_channel_strip_draws_the_top_maps_and_leaves_missing_images_blank(reference_artifacts, digits, tmp_path):
    # 2 images but k=4: the last two top-k slots have no image (index -1)
    stats_dir = make_stats(reference_artifacts, digits[0][:2], tmp_path / "stats", k=4)
    with np.load(stats_dir / "topk" / "conv2d.npz") as f:
        topk = {key: f[key] for key in f.files}
    channel = int(np.argmax(topk["value"][:, 0]))
    assert list(topk["index"][channel][2:]) == [-1, -1]
    strip = gallery.channel_strip(topk["images"][channel], topk["maps"][channel], topk["index"][channel])
    assert strip.shape == (57, 4 * 29 - 1, 3)
    best_map = strip[29:, :28, 0]
    assert best_map.max() == 255  # scaled by the channel's top value
    # the 26x26 map, centred on the 28x28 image: each map pixel over the centre of the 3x3 window it saw
    expected = np.rint(np.clip(topk["maps"][channel][0] / topk["value"][channel][0], 0, 1) * 255)
    np.testing.assert_array_equal(best_map[1:27, 1:27], expected)
    assert (best_map[[0, 27]] == 0).all() and (best_map[:, [0, 27]] == 0).all()
    assert (strip[:, 2 * 29:] == 255).all()  # the slots without an image stay blank


def test_tiles_are_at_least_96_px_and_the_strips_fill_the_width(site, stats_folder):
    k = json.loads((stats_folder / "stats.json").read_text())["k"]
    page = (site / "layers" / "conv2d.html").read_text()
    widths = [int(w) for w in re.findall(r'<figure style="min-width: (\d+)px"><img ', page)]
    assert len(widths) == 32 and min(widths) / k >= gallery.MIN_TILE_PX  # each tile at least 96 px wide
    css = (site / "gallery.css").read_text()
    assert "figure { margin: 0; flex: 1 1 0; }" in css and "width: 100%" in css  # and wider where the page is


def test_dead_channels_are_flagged(reference_artifacts, digits, tmp_path):
    # nothing exceeds this threshold: every channel is dead, as runtime stats decides it
    names = [f"scan_{i}.png" for i in range(8)]
    stats_dir = make_stats(reference_artifacts, digits[0][:8], tmp_path / "stats", k=2, threshold=1e6, sources=names)
    site = gallery.write_gallery(stats_dir, tmp_path / "site")
    page = (site / "layers" / "conv2d.html").read_text()
    assert '<li title="scan_' in page  # each top-k value names its source
    assert page.count('<section class="channel dead"') == 32
    assert page.count('class="badge dead"') == 32
    index = (site / "index.html").read_text()
    assert re.search(r"<td>32</td><td>26×26</td><td>32 <span", index)  # 32 channels, 32 dead
    assert 'href="layers/conv2d.html#c7">c7</a> +24' in index  # the first 8 linked
    assert 'id="c7"' in page


def test_existing_folders_are_never_clobbered(stats_folder, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="no gallery wrote"):
        gallery.write_gallery(stats_folder, foreign, force=True)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    site = gallery.write_gallery(stats_folder, tmp_path / "site")
    with pytest.raises(DataError, match="--force"):
        gallery.write_gallery(stats_folder, site)
    (site / "index.html").write_text("old")
    gallery.write_gallery(stats_folder, site, force=True)
    assert "Microscope" in (site / "index.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "site"]  # no temporary folders left


def test_a_failed_build_leaves_the_previous_site_and_no_temporary_folder(stats_folder, tmp_path):
    site = gallery.write_gallery(stats_folder, tmp_path / "site")
    broken = tmp_path / "broken"
    shutil.copytree(stats_folder, broken)
    (broken / "topk" / "conv2d_1.npz").write_bytes(b"not an npz")
    with pytest.raises(ArtifactError, match="conv2d_1.npz"):
        gallery.write_gallery(broken, site, force=True)
    assert "Microscope" in (site / "index.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "site"]


def test_paths_in_stats_json_stay_inside_the_stats_folder(stats_folder, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(stats_folder, evil)
    meta = json.loads((evil / "stats.json").read_text())
    meta["outputs"]["conv2d"]["topk"] = "../../outside.npz"
    (evil / "stats.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="leaves the folder"):
        gallery.write_gallery(evil, tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    from viz.cli import main

    assert run_cli(main, ["gallery", str(tmp_path / "nope"), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err and "runtime stats" in err
    (tmp_path / "stats.json").write_text('{"schema": "other"}')
    assert run_cli(main, ["gallery", str(tmp_path)]) == 2
    assert "expected 'featuremaps.stats/1'" in capsys.readouterr().err


def test_cli_builds_the_site_without_tensorflow_or_onnxruntime(stats_folder, tmp_path):
    code = ("import sys; from viz.cli import main; main(['gallery', sys.argv[1], '--out', sys.argv[2]]); "
            "assert not {'tensorflow', 'onnxruntime'} & set(sys.modules), 'a framework was imported'")
    done = subprocess.run([sys.executable, "-c", code, str(stats_folder), str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.search(r"site/index.html\s+\(\d+ files, [\d.]+ MB\)", done.stdout)


def test_an_unwritable_place_is_a_clear_error(stats_folder, tmp_path):
    (tmp_path / "file.txt").write_text("not a folder")
    with pytest.raises(DataError, match="cannot write the site into"):
        gallery.write_gallery(stats_folder, tmp_path / "file.txt" / "site")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_colour_model_fed_floats(zoo_artifacts, digits, tmp_path):
    from zoo import digits_as

    images = digits_as((32, 32, 3), digits[0][:6]) * np.array([1.0, 0.5, 0.0], np.float32)  # orange floats
    stats_dir = make_stats(zoo_artifacts("rgb_small"), images, tmp_path / "stats", k=2)
    site = gallery.write_gallery(stats_dir, tmp_path / "site")
    with Image.open(site / "img" / "rgb_conv" / "c0.png") as png:
        strip = np.asarray(png)
    assert strip.shape == (2 * 32 + 1, 2 * 33 - 1, 3)
    # the tiles keep the images' colour (red and green, no blue; the orange overlay has no blue either)
    assert (strip[:32, :32, 2] == 0).all() and strip[:32, :32, 0].max() > 100
    assert (site / "layers" / "rgb_conv_2.html").is_file()
