"""The live explorer page (runtime/serve/static) in headless Chromium, against the real `runtime serve`.

The page exposes the last request's pixels and response on window.explorer: what it received must
equal runtime.run on the same pixels, bit for bit (onnx backend, one image per request).
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from serving import Server

import runtime

LAST = """() => {
  const l = window.explorer.last, outputs = {};
  for (const [name, v] of Object.entries(l.outputs)) outputs[name] = {shape: v.shape, data: Array.from(v.data)};
  return {pixels: Array.from(l.pixels), outputs};
}"""
MOSAIC = """name => {
  const c = document.querySelector(`details[data-layer="${name}"] canvas`);
  const rgba = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  return {width: c.width, height: c.height, rgba: Array.from(rgba)};
}"""


@pytest.fixture(scope="module")
def reference(reference_artifacts):
    with runtime.load(reference_artifacts) as model:
        yield model


# wait_for_function gets functions, not expressions: Playwright would eval an expression, which the page's
# Content-Security-Policy (script-src 'self') forbids, as it should.
def open_explorer(page, server) -> None:
    page.goto(f"{server.url}/?model={server.name}")
    page.wait_for_function("() => window.explorer.ready")


def last(page, shape) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The pixels the page sent (as [H, W, C] uint8) and the outputs it received."""
    got = page.evaluate(LAST)
    outputs = {k: np.asarray(v["data"], np.float32).reshape(v["shape"]) for k, v in got["outputs"].items()}
    return np.asarray(got["pixels"], np.uint8).reshape(shape), outputs


def assert_same_as_runtime(model, pixels, outputs) -> None:
    expected = model.run(pixels)
    assert sorted(outputs) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(outputs[name], value, err_msg=name)


def stroke(page, points, wait_each: bool = False) -> None:
    """Drag the mouse through points given as fractions of the pad; optionally wait for a response per move."""
    box = page.locator("#pad").bounding_box()
    at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        before = page.evaluate("window.explorer.responses")
        page.mouse.move(x, y, steps=4)
        if wait_each:  # the maps update while the button is still down
            page.wait_for_function(f"() => window.explorer.responses > {before}")
    page.mouse.up()


def wait_rendered(page, layer: str) -> None:
    page.wait_for_function(
        f"() => document.querySelector('details[data-layer=\"{layer}\"]').dataset.rendered "
        "== window.explorer.responses && !window.explorer.busy")


def expected_mosaic(maps: np.ndarray, cols: int = 8) -> np.ndarray:
    """The gray levels the page draws, per-map normalisation, 1-pixel white gaps (as viz.tiling.tile)."""
    from viz.tiling import tile

    return np.rint(tile(maps[0], "HWC", cols=cols, pad=1, normalize="map", pad_value=1.0) * 255)


def test_drawing_updates_the_maps_with_the_servers_numbers(page, server, reference):
    open_explorer(page, server)
    stroke(page, [(0.5, 0.15), (0.5, 0.4), (0.52, 0.65), (0.5, 0.85)], wait_each=True)
    page.wait_for_function("() => window.explorer.responses >= 3")
    wait_rendered(page, "conv2d")
    pixels, outputs = last(page, (28, 28, 1))
    assert pixels.max() == 255 and (pixels == 0).mean() > 0.5  # a white stroke on black
    assert_same_as_runtime(reference, pixels, outputs)
    # what is drawn is those maps: the canvas holds the per-map normalised grid of conv2d
    drawn = page.evaluate(MOSAIC, "conv2d")
    gray = np.asarray(drawn["rgba"], np.float64).reshape(drawn["height"], drawn["width"], 4)[..., 0]
    assert np.abs(gray - expected_mosaic(outputs["conv2d"])).max() <= 1
    before = gray
    # a second stroke: new pixels, new maps drawn
    stroke(page, [(0.2, 0.5), (0.8, 0.5)])
    page.wait_for_function("() => window.explorer.last.pixels.reduce((a, b) => a + b) > %d" % pixels.sum())
    wait_rendered(page, "conv2d")
    pixels2, outputs2 = last(page, (28, 28, 1))
    assert_same_as_runtime(reference, pixels2, outputs2)
    after = np.asarray(page.evaluate(MOSAIC, "conv2d")["rgba"], np.float64).reshape(before.shape + (4,))[..., 0]
    assert np.abs(after - expected_mosaic(outputs2["conv2d"])).max() <= 1 and not np.array_equal(after, before)
    top = int(np.argmax(outputs2["dense_1"][0]))
    assert page.inner_text("#prediction .predicted").startswith(str(top))
    assert page.errors == []


def test_uploads_and_shipped_digits_reach_the_model_unchanged(page, server, reference, digits, tmp_path):
    open_explorer(page, server)
    x, y = digits
    png = tmp_path / "digit.png"
    Image.fromarray(x[3]).save(png)  # 28x28: no resizing, so the page must send exactly these pixels
    page.set_input_files("#upload", str(png))
    page.wait_for_function("() => window.explorer.responses >= 1")
    pixels, outputs = last(page, (28, 28, 1))
    np.testing.assert_array_equal(pixels[..., 0], x[3])
    assert_same_as_runtime(reference, pixels, outputs)
    assert page.inner_text("#prediction .predicted").startswith(str(int(y[3])))

    # a colour photo of another size: resized and turned gray by the page; the server still agrees
    big = Image.fromarray(np.stack([x[5], x[5] // 2, 255 - x[5]], axis=-1)).resize((70, 70))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    page.set_input_files("#upload", files=[{"name": "photo.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    page.wait_for_function("() => window.explorer.responses >= 2")
    pixels, outputs = last(page, (28, 28, 1))
    assert_same_as_runtime(reference, pixels, outputs)

    # a shipped digit: the server's samples, drawn on the pad and sent as they are
    page.click("#samples button[data-index='0']")
    page.wait_for_function("() => window.explorer.responses >= 3")
    pixels, outputs = last(page, (28, 28, 1))
    np.testing.assert_array_equal(pixels[..., 0], x[0])
    assert page.errors == []


def test_a_clicked_map_is_enlarged_with_its_channel_and_range(page, server):
    open_explorer(page, server)
    page.click("#samples button[data-index='1']")
    page.wait_for_function("() => window.explorer.responses >= 1")
    wait_rendered(page, "conv2d")
    _, outputs = last(page, (28, 28, 1))
    maps = outputs["conv2d"][0]
    canvas = page.locator("details[data-layer='conv2d'] canvas")
    box = canvas.bounding_box()
    scale = box["width"] / (8 * 27 - 1)
    canvas.click(position={"x": (27 + 13) * scale, "y": (27 + 13) * scale})  # row 1, column 1: channel 9
    zoom = page.locator("#zoom")
    assert zoom.is_visible() and zoom.get_attribute("data-channel") == "9"
    assert "conv2d · channel 9 of 32" in page.inner_text("#zoom-title")
    info = page.inner_text("#zoom-info")
    assert f"min {maps[..., 9].min():.3f}" in info and f"max {maps[..., 9].max():.3f}" in info
    page.keyboard.press("ArrowRight")
    assert zoom.get_attribute("data-channel") == "10"
    assert f"max {maps[..., 10].max():.3f}" in page.inner_text("#zoom-info")
    page.keyboard.press("Escape")
    assert not zoom.is_visible()

    # per-layer normalisation redraws the grid with one scale for all maps
    page.select_option("#norm", "layer")
    page.wait_for_function("() => document.querySelector('details[data-layer=\"conv2d\"]').dataset.rendered")
    drawn = page.evaluate(MOSAIC, "conv2d")
    gray = np.asarray(drawn["rgba"], np.float64).reshape(drawn["height"], drawn["width"], 4)[..., 0]
    from viz.tiling import tile

    expected = np.rint(tile(maps, "HWC", cols=8, pad=1, normalize="layer", pad_value=1.0) * 255)
    assert np.abs(gray - expected).max() <= 1
    assert page.errors == []


def test_collapsed_layers_are_drawn_only_when_opened(page, server):
    # what keeps models with hundreds of exposed layers usable: closed or off-screen sections cost nothing
    open_explorer(page, server)
    page.click("details[data-layer='conv2d_1'] summary")
    page.click("#samples button[data-index='2']")
    page.wait_for_function("() => window.explorer.responses >= 1 && !window.explorer.busy")
    wait_rendered(page, "conv2d")
    closed = page.locator("details[data-layer='conv2d_1']")
    assert closed.get_attribute("open") is None and closed.get_attribute("data-rendered") is None
    page.click("details[data-layer='conv2d_1'] summary")
    wait_rendered(page, "conv2d_1")
    _, outputs = last(page, (28, 28, 1))
    drawn = page.evaluate(MOSAIC, "conv2d_1")
    gray = np.asarray(drawn["rgba"], np.float64).reshape(drawn["height"], drawn["width"], 4)[..., 0]
    assert np.abs(gray - expected_mosaic(outputs["conv2d_1"])).max() <= 1
    assert page.errors == []


def test_the_page_at_the_root_finds_the_served_model(page, server):
    import tritonclient.http

    # the standard repository index the page asks (and NVIDIA's client reads)
    index = tritonclient.http.InferenceServerClient(server.host_port).get_model_repository_index()
    assert index == [{"name": server.name, "version": "1", "state": "READY"}]
    page.goto(f"{server.url}/")
    page.wait_for_function("() => window.explorer.ready")
    assert page.inner_text("#model-name") == f"model {server.name}"
    assert page.errors == []


def test_an_unknown_model_is_a_clear_message_on_the_page(page, server):
    page.goto(f"{server.url}/?model=nope")
    page.wait_for_selector("#status.error")
    status = page.inner_text("#status")
    assert "nope" in status and server.name in status  # the server's error: what was asked, what is there
    assert page.inner_text("#model-name") == "no model"


def test_a_three_channel_model_of_another_size(page, zoo_artifacts):
    artifacts = zoo_artifacts("rgb_small")
    server = Server(artifacts)
    try:
        open_explorer(page, server)
        assert page.evaluate("[document.querySelector('#pad').width, document.querySelector('#pad').height]") \
            == [32, 32]
        page.locator("#colour").fill("#ff8000")
        stroke(page, [(0.3, 0.3), (0.7, 0.7)])
        page.wait_for_function(
            "() => window.explorer.responses >= 1 && window.explorer.last.pixels.some(v => v == 128)")
        pixels, outputs = last(page, (32, 32, 3))
        stroked = pixels.max(axis=-1) > 0
        assert stroked.any() and (pixels[stroked][:, 2] == 0).all()  # orange: red and green, no blue
        with runtime.load(artifacts) as model:
            assert_same_as_runtime(model, pixels, outputs)
        assert page.locator("details.layer").count() == 2
    finally:
        server.stop()
    assert page.errors == []
