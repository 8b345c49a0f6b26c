"""Every command and example in README.md runs as written, in the order shown, as a reader would run them.

Each fenced block has a marker on the line before it:
- `<!-- readme-test: run -->`: shell blocks run with bash (`set -e`), Python blocks with this interpreter;
- `<!-- readme-test: serve -->`: one command that serves until stopped: started in the background, its start-up
  line checked (against the block's `# serving model ...` comment, where it has one) and its explorer page fetched;
- `<!-- readme-test: run with the server above -->`: runs against the last server started;
- `<!-- readme-test: skip (reason) -->`: installs, listings and forms of a command, and the slow ones: training,
  Ray, benchmarks, GPU, Docker.
A block without a marker fails the test (YAML blocks are configuration, not commands).

All blocks share one working folder (as the reader's clone would be; PYTHONPATH stands for the editable
install) and `python` is this interpreter. Two substitutions, no more: `python -m export --force` (the reference
export, 45 s) copies the session's exported reference artifacts, the very command's output, which
tests/export checks; and the ports 8000/8001 become free ones.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- readme-test: (run with the server above|run|serve|skip \((?P<why>[^)]+)\)) -->")
REFERENCE_EXPORT = "python -m export --force"
# What a `run` block must never hold: the slow and the machine-changing ones are skipped, explicitly.
NEVER_RUN = ("pip install", "apt-get", "--ray", "export.reference", "benchmarks", "docker")


class Block(NamedTuple):
    line: int  # of the opening fence, 1-based
    lang: str
    marker: str
    text: str


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block with the marker on the line before it ("" where there is none)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang, start = lines[i][3:].strip(), i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = lines[start - 1] if start else ""
            match = MARKER.fullmatch(before.strip())
            blocks.append(Block(start + 1, lang, match[1] if match else "", "\n".join(lines[start + 1:end])))
            i = end
        i += 1
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_block_is_marked_and_slow_ones_are_skipped_explicitly():
    blocks = readme_blocks(README.read_text())
    unmarked = [b.line for b in blocks if not b.marker and b.lang != "yaml"]
    assert not unmarked, f"README blocks without a readme-test marker, at lines {unmarked}"
    for b in blocks:
        if b.marker.startswith(("run", "serve")):
            assert not [w for w in NEVER_RUN if w in b.text], f"README line {b.line}: mark it skip, with the reason"
    assert sum(b.marker == "run" for b in blocks) >= 8


@pytest.fixture
def reader(tmp_path):
    """A working folder and environment as a reader's: `python` on PATH is this interpreter (its virtual
    environment activated), no variables of the test session but MNIST_NPZ (the README's mnist.npz line reads it)."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "python").exists():
        pytest.skip(f"no `python` beside {sys.executable}")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEATUREMAPS_", "RAY_", "PYTEST"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    return work, env


def test_the_readme_runs_as_written(reader, reference_artifacts, mnist_npz):
    work, env = reader
    servers: list[subprocess.Popen] = []
    ports: dict[str, str] = {}
    try:
        for block in readme_blocks(README.read_text()):
            where = f"README.md line {block.line}"
            text = block.text
            for port, free in ports.items():
                text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free}")
            if block.marker.startswith("run") and block.lang == "python":
                done = subprocess.run([sys.executable, "-c", text], cwd=work, env=env, capture_output=True,
                                      text=True, timeout=300)
            elif block.marker.startswith("run"):
                if REFERENCE_EXPORT in text:  # the session's reference export: the same command's output
                    text = text.replace(REFERENCE_EXPORT, f"rm -rf artifacts && cp -r {reference_artifacts} artifacts")
                done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], cwd=work, env=env,
                                      capture_output=True, text=True, timeout=300)
            elif block.marker == "serve":
                servers.append(start_server(block, work, env, ports))
                continue
            else:
                continue
            assert done.returncode == 0, f"{where} failed:\n{text}\n--- stderr:\n{done.stderr[-3000:]}"
            assert "Traceback" not in done.stderr, f"{where}:\n{done.stderr[-3000:]}"
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    # What the blocks say they write is there.
    for path in ("figures/comparison.png", "acts.zarr", "digit_stats/stats.json", "merged_stats/stats.json",
                 "site/index.html", "my_artifacts/manifest.json", "my_figures/stem.png", "my_figures/block.png",
                 "my_site/index.html"):
        assert (work / path).exists(), path


def start_server(block: Block, work: Path, env: dict, ports: dict) -> subprocess.Popen:
    """Start a serve block's command on a free port; check its start-up line and its explorer page."""
    command = block.text.splitlines()[0].split("  #")[0].strip()
    port = re.search(r"--port (\d+)", command)
    readme_port = port[1] if port else "8000"
    ports[readme_port] = str(free_port())
    command = (re.sub(r"--port \d+", f"--port {ports[readme_port]}", command) if port
               else f"{command} --port {ports[readme_port]}")
    server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    line = server.stdout.readline()
    url = f"http://127.0.0.1:{ports[readme_port]}/"
    assert line.startswith("serving model ") and line.rstrip().endswith(f"; explorer at {url}"), line
    said = [c[2:] for c in block.text.splitlines()[1:] if c.startswith("# serving model ")]
    if said:  # the start-up line the README shows is the one printed
        assert line.rstrip() == said[0].replace(f":{readme_port}/", f":{ports[readme_port]}/"), line
    with urllib.request.urlopen(url, timeout=30) as page:
        assert page.status == 200 and "<html" in page.read().decode().lower()
    return server

