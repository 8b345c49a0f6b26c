"""sha256 of files and of artifact trees."""
from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # the standard library's chunked loop (3.11+)


def tree_files(root: Path) -> dict[str, dict]:
    """Every file under root except the manifest: relative POSIX path -> {sha256, bytes}."""
    files = {}
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST:
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files
