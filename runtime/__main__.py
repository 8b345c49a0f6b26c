"""`python -m runtime`: see runtime/cli/main.py."""
from runtime.cli.main import main
from runtime.cli.process import run_cli

raise SystemExit(run_cli(main))
