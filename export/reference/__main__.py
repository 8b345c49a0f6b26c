"""`python -m export.reference`: see export.cli.reference_main."""
from runtime.cli.process import run_cli

from ..cli import reference_main

raise SystemExit(run_cli(reference_main))
