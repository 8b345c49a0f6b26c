"""`python -m runtime`: inspect artifacts (`info`), extract feature maps (`run`), summarise them (`stats`).

    python -m runtime info ARTIFACTS [--backend onnx|tf]
    python -m runtime run ARTIFACTS --input PATH [PATH ...] --out acts.npz|acts.zarr [--ray [ADDRESS]] ...
    python -m runtime stats ARTIFACTS --input PATH [PATH ...] --out stats/ [--k 9] [--ray [ADDRESS]] ...
    python -m runtime serve ARTIFACTS [--host H] [--port P] ...
    python -m runtime triton ARTIFACTS --out model_repository/ ...

Each command's flags live in its module (runtime/cli/info.py, run.py, stats.py, serve.py, triton.py); this
module only dispatches.

Errors (project errors and bad arguments) are one line on stderr starting with "error:",
exit code 2, no traceback. Nothing here imports TensorFlow unless the TF backend is used
(or, for `info`, probed).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from runtime.cli import info as info_cli
from runtime.cli import run as run_cli
from runtime.cli import serve as serve_cli
from runtime.cli import stats as stats_cli
from runtime.cli import triton as triton_cli
from runtime.cli.args import ArgumentParser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m runtime",
                       description="Inspect exported artifacts, extract their feature maps, summarise them.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{info,run,stats,serve,triton}")
    info_cli.add_parser(sub)
    run_cli.add_parser(sub)
    stats_cli.add_parser(sub)
    serve_cli.add_parser(sub)
    triton_cli.add_parser(sub)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return args.func(args)


__all__ = ["main", "parse_args"]
