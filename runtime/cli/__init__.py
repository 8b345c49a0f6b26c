"""`python -m runtime`: one module per command, the argparse types (args) and the process wrapper (process).

Only this package knows flags, exit codes and signals; nothing imports it but the `__main__` modules
(and export/ and viz/ for args and process, for their own CLIs).
"""
