"""The Open Inference Protocol (KServe v2) server (server.py; `python -m runtime serve` is runtime/cli/serve.py),
and the Triton model repository (triton.py; `python -m runtime triton` is runtime/cli/triton.py).

Importing this package imports nothing heavy; the web stack (Starlette, uvicorn, the `[serve]`
extra) is imported by runtime.serve.app, when a server is built.
"""
