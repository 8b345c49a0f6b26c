"""The ASGI app (Starlette): Open Inference Protocol v2 endpoints, the explorer's samples, the static page.

    GET  /v2/health/live, /v2/health/ready        200 when serving
    GET  /v2                                      server metadata
    GET  /v2/models/NAME[/versions/1]             model metadata
    GET  /v2/models/NAME[/versions/1]/ready       200 when the model is ready
    GET  /v2/models/NAME[/versions/1]/stats       Triton statistics: inference_count / execution_count
    POST /v2/models/NAME[/versions/1]/infer       JSON tensors or the binary tensor data extension
    POST /v2/repository/index                     Triton's repository index: the one model (the page's default)
    GET  /explorer/samples                        the shipped test digits, for 28x28x1 models
    GET  /                                        runtime/serve/static/ (index.html)

Every error is a 4xx (5xx for a server fault) with {"error": "..."}. The defences in front of it (Host, Origin,
headers, no tracebacks) are runtime/serve/guard.py; those of the connections, runtime/serve/connections.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
from importlib import metadata
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from runtime.api import Model
from runtime.errors import InputError
from runtime.preprocess import to_batch
from runtime.serve.batcher import Batcher
from runtime.serve.budget import Budget, HeldResponse, OverBudget
from runtime.serve.protocol import HEADER_LENGTH, encode_infer, model_metadata, parse_infer

STATIC = Path(__file__).parent / "static"
VERSION = "1"
PLATFORMS = {"onnx": "onnxruntime_onnx", "tf": "tensorflow_savedmodel"}
# JSON spells a float32 in at most about 24 characters: no useful request is larger than this
# many bytes per input value (plus room for the JSON around it).
BYTES_PER_VALUE, BODY_SLACK = 24, 64 * 1024
FREE_DIM_LIMIT = 256  # a free input dimension (any size) counts this much in the request body limit
# What a JSON output value costs the server, at most: its text (a float32 as its shortest float64 repr, comma
# included, is at most 24 characters; 12.7 on average for the reference CNN's feature maps), and the float32
# result plus the Python float and list slot that json.dumps walks (4 + 24 + 8).
JSON_TEXT_PER_VALUE, JSON_WORK_PER_VALUE = 24, 36
BODY_TYPES = ("application/json", "application/octet-stream")
RETRY_AFTER_S = 1


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


def request_limit(model: Model, max_batch: int) -> int:
    """The largest request body accepted: max_batch images spelled out as JSON."""
    sample = math.prod(d or FREE_DIM_LIMIT for d in model.input_spec.image_shape)
    return BODY_SLACK + max_batch * sample * BYTES_PER_VALUE


def create_app(model: Model, name: str, max_batch: int = 64, max_delay_ms: float = 0.0, body_timeout_s: float = 30.0,
               budget_bytes: int = 256 << 20, max_json_bytes: int = 16 << 20) -> Starlette:
    """An ASGI app serving `model` as `name`; its lifespan starts and stops the batching worker.

    A request body must arrive within body_timeout_s (a stalled client gets 408, not a held slot).
    Infer requests in flight hold at most budget_bytes together (runtime/serve/budget.py; past it: 503
    and Retry-After); a response whose JSON could exceed max_json_bytes is refused (400), naming binary outputs.
    """
    limit = request_limit(model, max_batch)
    state: dict = {}
    budget = Budget(budget_bytes)
    sizes = _Sizes(model)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["batcher"] = Batcher(model, max_batch, max_delay_ms)
        try:
            yield
        finally:  # after uvicorn has finished the requests in flight
            state.pop("batcher").close()

    def ready() -> bool:
        return "batcher" in state

    def check_model(request: Request) -> None:
        given, version = request.path_params["model"], request.path_params.get("version", VERSION)
        if given != name:
            raise HTTPException(404, f"unknown model {given!r}; this server has {name!r}")
        if version != VERSION:
            raise HTTPException(404, f"unknown version {version!r} of model {name!r}; available: [{VERSION!r}]")

    async def live(request: Request) -> Response:
        return JSONResponse({})

    async def health_ready(request: Request) -> Response:
        return JSONResponse({}) if ready() else _error(503, "not ready")

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "featuremaps", "version": _version(),
                             "extensions": ["binary_tensor_data", "statistics"]})

    async def model_meta(request: Request) -> Response:
        check_model(request)
        return JSONResponse(model_metadata(model.manifest, name, PLATFORMS.get(model.backend, model.backend)))

    async def model_ready(request: Request) -> Response:
        check_model(request)
        return JSONResponse({}) if ready() else _error(503, f"model {name!r} is not ready")

    async def stats(request: Request) -> Response:
        check_model(request)
        s = state["batcher"].stats if ready() else None
        return JSONResponse({"model_stats": [{
            "name": name, "version": VERSION, "inference_count": s.images if s else 0,
            "execution_count": s.batches if s else 0, "request_count": s.requests if s else 0}]})

    async def infer(request: Request) -> Response:
        check_model(request)
        if not ready():
            return _error(503, "the server is shutting down")
        _check_content_type(request)
        hold = budget.hold()
        try:
            body = await _read_body(request, limit, body_timeout_s, hold)
            parsed = parse_infer(body, request.headers.get(HEADER_LENGTH), model.manifest)
            hold.take(_working_bytes(sizes, parsed, max_json_bytes))
            batch = to_batch(parsed.images, model.input_spec)  # NaN/inf and value range
            results = await state["batcher"].run(batch, parsed.outputs)
            chunks, headers = encode_infer(parsed, name, results)
            del body, parsed, batch, results
            return HeldResponse(b"".join(chunks), headers, hold)  # gives the hold back once sent
        except BaseException:
            hold.release()
            raise

    async def repository_index(request: Request) -> Response:
        # Triton's model repository extension (tritonclient's get_model_repository_index): how the
        # explorer page at / finds the model without ?model=NAME.
        return JSONResponse([{"name": name, "version": VERSION, "state": "READY" if ready() else "UNAVAILABLE"}])

    samples = _samples(model)

    async def explorer_samples(request: Request) -> Response:
        return JSONResponse(samples)

    prefixes = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
    # Starlette tries routes in order: the infer routes come first, as nearly every request is one.
    routes = [Route(prefix + "/infer", infer, methods=["POST"]) for prefix in prefixes]
    for prefix in prefixes:
        routes += [Route(prefix, model_meta), Route(prefix + "/ready", model_ready), Route(prefix + "/stats", stats)]
    routes += [
        Route("/v2/health/live", live), Route("/v2/health/ready", health_ready), Route("/v2", server_metadata),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/explorer/samples", explorer_samples),
        Mount("/", StaticFiles(directory=STATIC, html=True)),
    ]
    handlers = {InputError: _bad_request, HTTPException: _http_error, _TooLarge: _too_large, _TooSlow: _too_slow,
                ClientDisconnect: _disconnected, OverBudget: _over_budget, Exception: _server_fault}
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


def _check_content_type(request: Request) -> None:
    """415 unless the body is declared JSON or binary: no simple cross-site request (text/plain, a form) reaches
    the model. No Content-Type is accepted from clients that are not browsers (tritonclient sends none)."""
    declared = request.headers.get("content-type")
    if declared is None and "origin" not in request.headers:
        return
    media = (declared or "").partition(";")[0].strip().lower()
    if media not in BODY_TYPES:
        raise HTTPException(415, f"Content-Type {(declared or 'missing')[:100]!r} is not accepted; send "
                                 f"{' or '.join(BODY_TYPES)}")


class _Sizes:
    """Values per image of each output, and bytes per float32 input image, for a request's image shape.

    A free dimension of an output (a model of any input size) is counted as the request's largest
    input dimension: a fully convolutional model's maps are at most about as large as its input.
    """

    def __init__(self, model: Model):
        self.shapes = {o.name: tuple(o.shape[1:]) for o in model.manifest.outputs}
        self.seen: dict[tuple, dict[str, int]] = {}  # per image shape (a fixed-size model has one)

    def outputs(self, image_shape: tuple) -> dict[str, int]:
        sizes = self.seen.get(image_shape)
        if sizes is None:
            largest = max(image_shape, default=1)
            sizes = {name: math.prod(largest if d is None else d for d in shape) for name, shape in self.shapes.items()}
            if len(self.seen) < 64:  # bounded: a client choosing free sizes cannot grow it
                self.seen[image_shape] = sizes
        return sizes


def _working_bytes(sizes: _Sizes, parsed, max_json_bytes: int) -> int:
    """What running and answering `parsed` holds: the float32 batch, the outputs and the response body.

    Raises:
        InputError: the JSON part of the response could exceed max_json_bytes.
    """
    n, image_shape = len(parsed.images), tuple(parsed.images.shape[1:])
    per_image = sizes.outputs(image_shape)
    values = sum(per_image[o] for o in parsed.outputs) * n
    json_values = sum(per_image[o] for o in parsed.outputs if not parsed.binary[o]) * n
    if json_values * JSON_TEXT_PER_VALUE > max_json_bytes:
        raise InputError(f"the response would hold {json_values} values as JSON (up to "
                         f"{json_values * JSON_TEXT_PER_VALUE} bytes), over this server's JSON limit of "
                         f"{max_json_bytes} bytes; ask for binary outputs (parameters.binary_data_output: true, "
                         "or binary_data per output), fewer outputs or fewer images")
    return 4 * math.prod(image_shape) * n + 8 * values + (JSON_TEXT_PER_VALUE + JSON_WORK_PER_VALUE) * json_values


async def _read_body(request: Request, limit: int, timeout_s: float, hold) -> bytes:
    """The body, refused (413) as soon as it is known to exceed limit (never buffered past it), or
    (408) when it has not all arrived within timeout_s; its bytes are taken from `hold` (OverBudget)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise _TooLarge(int(declared), limit)
        hold.take(int(declared))
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _TooLarge(size, limit)
                if declared is None:
                    hold.take(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise _TooSlow(size, timeout_s) from None
    return b"".join(chunks)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


async def _bad_request(request: Request, exc: InputError) -> Response:
    return _error(400, " ".join(str(exc).split()))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error(exc.status_code, str(exc.detail))


async def _too_large(request: Request, exc: _TooLarge) -> Response:
    size, limit = exc.args
    return _error(413, f"request body of {size}+ bytes exceeds this server's limit of {limit} bytes "
                       "(the server's max batch of images spelled out as JSON)")


async def _too_slow(request: Request, exc: _TooSlow) -> Response:
    size, timeout_s = exc.args
    return _error(408, f"request body not received within {timeout_s:g} s (got {size} bytes); send it at once")


async def _over_budget(request: Request, exc: OverBudget) -> Response:
    if not exc.ever:
        return _error(413, f"this request needs {exc.wanted} bytes in flight, over this server's budget of "
                           f"{exc.total} bytes; send fewer images or ask for fewer outputs")
    response = _error(503, f"the server is busy ({exc.total - exc.left} of {exc.total} in-flight bytes taken, "
                           f"this request needs {exc.wanted}); retry after {RETRY_AFTER_S} s")
    response.headers["retry-after"] = str(RETRY_AFTER_S)
    return response


async def _disconnected(request: Request, exc: ClientDisconnect) -> Response:
    return _error(400, "client disconnected before sending the whole request")  # nobody reads it


async def _server_fault(request: Request, exc: Exception) -> Response:
    # A bug or a backend failure: the client gets the protocol's error form; Starlette re-raises it, and
    # runtime/serve/guard.py logs one rate-limited line (never the traceback).
    return _error(500, f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}")


def _samples(model: Model) -> list[dict]:
    """The shipped MNIST test digits as {"label", "pixels" (28 rows of 28 uint8)}, for 28x28x1 models."""
    if model.input_spec.image_shape != (28, 28, 1):
        return []
    from runtime.data.mnist import shipped_digits

    x, y = shipped_digits()
    return [{"index": i, "label": int(label), "pixels": image.tolist()} for i, (image, label) in enumerate(zip(x, y))]


def _version() -> str:
    try:
        return metadata.version("featuremaps")
    except metadata.PackageNotFoundError:
        return "unknown"
