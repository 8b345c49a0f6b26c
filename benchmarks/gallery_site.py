"""Size and opening time of the microscope gallery of a model over the MNIST test digits.

    python -m benchmarks.gallery_site artifacts [--images 10000] [--k 9] [--data mnist.npz]

Runs `runtime stats`, builds the site with `viz gallery` into a temporary folder, and prints its
size and build time; with Playwright and chromium installed, also how long each page takes to open
from file:// in headless Chromium (load event, and every image of the first screen decoded).
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

FIRST_SCREEN = """async () => {
  const shown = [...document.images].filter(img => img.getBoundingClientRect().top < innerHeight);
  await Promise.all(shown.map(img => img.decode()));
  return performance.now();
}"""


def open_times(site: Path) -> dict[str, float]:
    """page -> ms until its first screen of images is decoded, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import chromium_path

    times = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path())
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        for path in [site / "index.html", *sorted((site / "layers").glob("*.html"))]:
            page.goto(path.as_uri())
            times[str(path.relative_to(site))] = page.evaluate(FIRST_SCREEN)
        browser.close()
    return times


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    import numpy as np

    import runtime
    from runtime.data.mnist import mnist_test_set
    from runtime.jobs.stats import stats
    from viz.gallery import site_size, write_gallery

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--data", help="Keras mnist.npz (default: $MNIST_NPZ, the Keras cache)")
    args = parser.parse_args()
    x, _, source = mnist_test_set(args.data)
    x = np.ascontiguousarray(x[: args.images])
    with tempfile.TemporaryDirectory() as tmp, runtime.load(args.artifacts) as model:
        start = time.perf_counter()
        stats(model, x, k=args.k).write(Path(tmp) / "stats")
        built = time.perf_counter()
        site = write_gallery(Path(tmp) / "stats", Path(tmp) / "site")
        done = time.perf_counter()
        files, size = site_size(site)
        pngs = sum(p.stat().st_size for p in site.rglob("*.png"))
        print(f"CPU: {cpu_name()}; {len(x):,} images from the {source}, k={args.k}")
        print(f"stats: {built - start:.1f} s; gallery build: {done - built:.2f} s")
        print(f"site: {files} files, {size / 1e6:.2f} MB ({pngs / 1e6:.2f} MB of PNGs)")
        try:
            for page, ms in open_times(site).items():
                print(f"open {page}: {ms:.0f} ms to the first screen of images")
        except ImportError:
            print("open times: not measured (pip install -e '.[browser]' and apt-get install chromium)")


if __name__ == "__main__":
    main()
