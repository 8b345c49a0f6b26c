"""`python -m export`: see export.cli."""
from runtime.cli.process import run_cli

from .cli import main

raise SystemExit(run_cli(main, flags={"path": "--data", "imports": "--import"}))  # mnist names `path`: our --data
