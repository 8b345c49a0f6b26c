"""`python -m runtime info`: its flags and its printout (runtime/describe.py writes the lines)."""
from __future__ import annotations

import argparse
from pathlib import Path

from runtime.artifacts.manifest import read_manifest
from runtime.backends import BACKENDS
from runtime.cli.process import say
from runtime.describe import backend_lines, describe, integrity_lines


def add_parser(sub) -> None:
    info = sub.add_parser("info", help="describe an artifacts folder and the backends and devices available here",
                          description="Describe an artifacts folder (checking the sha256 of each backend's files) "
                                      "and the backends here.")
    info.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    info.add_argument("--backend", choices=sorted(BACKENDS),
                      help="check only this backend's files and devices; they must be intact (default: every "
                           "installed backend, absent files reported; probing tf imports TensorFlow)")
    info.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    folder = args.artifacts
    manifest = read_manifest(folder, verify_files=False)  # schema version; the files are checked per backend
    integrity = integrity_lines(manifest, folder, args.backend)
    say("\n".join(describe(manifest, folder, integrity) + backend_lines([args.backend] if args.backend else None)))
    return 0
