"""The microscope gallery opened from file:// in headless Chromium: every page loads, every image resolves."""
from __future__ import annotations

from viz.gallery import write_gallery

IMAGES = """async () => {
  for (const img of document.images) img.loading = "eager";  // the pages load channel strips lazily
  await Promise.all([...document.images].map(img => img.decode().catch(() => null)));
  return [...document.images].map(img => [img.getAttribute("src"), img.naturalWidth]);
}"""


def test_every_page_and_image_of_the_gallery_loads(page, reference_stats, tmp_path):
    site = write_gallery(reference_stats, tmp_path / "site")
    page.goto((site / "index.html").as_uri())
    links = page.eval_on_selector_all("table.layers td:first-child > a", "links => links.map(a => a.href)")
    assert [link.rsplit("/", 1)[1] for link in links] == ["conv2d.html", "conv2d_1.html"]
    assert page.locator("svg.hist").count() == 2
    assert page.evaluate("getComputedStyle(document.body).fontFamily")  # the stylesheet applies
    for link, channels in zip(links, (32, 64)):
        page.goto(link)
        images = page.evaluate(IMAGES)
        assert len(images) == channels
        assert all(width == 3 * 29 - 1 for _, width in images), [src for src, width in images if width == 0]
        assert page.locator("section.channel").count() == channels
        page.click("text=← all layers")
        assert page.url.endswith("/index.html")
    assert page.errors == []
