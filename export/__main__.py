"""`python -m export`: see export.cli."""
from runtime.cli.process import run_cli

from .cli import main

raise SystemExit(run_cli(main, flags={"path": "--data"}))  # runtime.data.mnist names its `path`: our --data
