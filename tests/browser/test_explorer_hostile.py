"""The explorer and `runtime serve` against hostile pages in headless Chromium (issue 21): DNS rebinding, a
cross-site POST, framing and injected inline script. The explorer itself runs under the same policy in
test_explorer.py."""
from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

BODY = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": [0.0] * 784}]})
POST = """async ([url, body, type, mode]) => {
  try {
    const r = await fetch(url, {method: "POST", mode, headers: {"Content-Type": type}, body});
    return r.type === "opaque" ? "opaque" : r.status;
  } catch (e) { return "failed"; }
}"""


@pytest.fixture(scope="module")
def evil_site(server):
    """http://localhost:PORT/: a page from another origin on the same machine, which frames the explorer."""
    page = f'<!doctype html><title>evil</title><iframe id="f" src="{server.url}/"></iframe>'.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://localhost:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def inferences(server) -> int:
    import httpx

    stats = httpx.get(f"{server.url}/v2/models/{server.name}/stats").json()
    return stats["model_stats"][0]["inference_count"]


def test_a_cross_site_page_cannot_run_the_model_or_frame_the_explorer(page, server, evil_site):
    infer = f"{server.url}/v2/models/{server.name}/infer"
    before = inferences(server)
    page.goto(evil_site)
    # The simple request that needs no preflight (the attack: it is sent, its answer unreadable either way,
    # and Cross-Origin-Resource-Policy makes even the opaque answer a network error), and one that needs a preflight.
    assert page.evaluate(POST, [infer, BODY, "text/plain", "no-cors"]) in ("opaque", "failed")
    assert page.evaluate(POST, [infer, BODY, "application/json", "cors"]) == "failed"
    assert page.evaluate(POST, [infer, BODY, "application/octet-stream", "no-cors"]) in ("opaque", "failed")
    frame = page.frame_locator("#f")
    with pytest.raises(Exception):  # noqa: B017 - Playwright's timeout: the framed page never loads
        frame.locator("#pad").wait_for(timeout=1500)
    assert inferences(server) == before  # none of them reached the model
    # The same request from the server's own page does (and that page runs under the same policy).
    page.goto(f"{server.url}/?model={server.name}")
    page.wait_for_function("() => window.explorer.ready")
    assert page.evaluate(POST, [infer, BODY, "application/json", "same-origin"]) == 200
    assert inferences(server) == before + 1


def test_injected_inline_script_does_not_run_on_the_explorer(page, server):
    page.goto(f"{server.url}/?model={server.name}")
    page.wait_for_function("() => window.explorer.ready")
    ran = page.evaluate("""() => new Promise((resolve) => {
      document.addEventListener("securitypolicyviolation", (e) => resolve("blocked: " + e.violatedDirective));
      const s = document.createElement("script");
      s.textContent = "window.injected = true";
      document.body.appendChild(s);
      const img = document.createElement("img");
      img.setAttribute("onerror", "window.injected = true");
      img.src = "data:,x";
      document.body.appendChild(img);
      setTimeout(() => resolve(window.injected ? "ran" : "silent"), 1000);
    })""")
    assert ran.startswith("blocked: script-src"), ran
    assert page.evaluate("() => window.injected") is None
    page.errors.clear()  # the violations just provoked


def test_dns_rebinding_gets_nothing(browser, server):
    """A name the attacker controls, resolved to 127.0.0.1 (as a rebinding DNS server would): the page and the
    API answer 421, so the page on that name reads neither the model's metadata nor its outputs."""
    port = server.url.rsplit(":", 1)[1]
    path = os.environ.get("FEATUREMAPS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    rebound = browser.browser_type.launch(executable_path=path,
                                          args=["--host-resolver-rules=MAP rebind.evil.example 127.0.0.1"])
    try:
        page = rebound.new_page()
        response = page.goto(f"http://rebind.evil.example:{port}/")
        assert response.status == 421 and "not a name of this server" in response.json()["error"]
        got = page.evaluate("""async (url) => { const r = await fetch(url); return [r.status, await r.text()]; }""",
                            f"/v2/models/{server.name}")
        assert got[0] == 421 and "outputs" not in got[1]
        assert page.evaluate(POST, [f"/v2/models/{server.name}/infer", BODY, "application/json",
                                    "same-origin"]) == 421
    finally:
        rebound.close()
