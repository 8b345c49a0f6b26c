"""The Open Inference Protocol (KServe v2) server: `python -m runtime serve` (see runtime/serve/command.py).

Importing this package imports nothing heavy; the web stack (Starlette, uvicorn, the `[serve]`
extra) is imported by runtime.serve.app, when a server is built.
"""
