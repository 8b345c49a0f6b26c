"""`python -m runtime`: see runtime/cli.py."""
from .cli import main
from .errors import run_cli

raise SystemExit(run_cli(main))
