"""The Open Inference Protocol (KServe v2) over HTTP: request parsing and response encoding, numpy only.

Covers JSON tensors and Triton's binary tensor data extension: a body whose first
`Inference-Header-Content-Length` bytes are the JSON header, followed by the raw little-endian,
row-major bytes of every input that declares `parameters.binary_data_size`, in input order.
Every problem with a request is an InputError whose message becomes {"error": "..."}.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from runtime.artifacts.manifest import MAX_DIM, Manifest
from runtime.errors import InputError

HEADER_LENGTH = "inference-header-content-length"
# The input datatypes accepted: preprocessed floats, or raw pixels that the manifest's
# preprocessing scales (as Model.run does).
INPUT_DTYPES = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1"), "INT8": np.dtype("i1"), "UINT16": np.dtype("<u2"),
                "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4")}  # integers: pixels, or a model's declared input
OUTPUT_DATATYPE = "FP32"  # every output of the artifacts is float32


@dataclass
class InferRequest:
    id: str | None
    images: np.ndarray  # [N, H, W, C], FP32 or UINT8 as sent
    outputs: list[str]  # the names to return, in order
    binary: dict[str, bool]  # name -> return its data as binary


def model_metadata(manifest: Manifest, name: str, platform: str) -> dict:
    """The v2 model metadata: the input `image` and every output, with -1 for the batch dimension.

    Also parameters.labels (class names) and parameters.roles (output name -> "model_output" | "feature_map").
    """
    inp = manifest.input
    return {
        "name": name, "versions": ["1"], "platform": platform,
        "inputs": [{"name": inp.name, "datatype": OUTPUT_DATATYPE, "shape": _dims(inp.shape)}],
        "outputs": [{"name": o.name, "datatype": OUTPUT_DATATYPE, "shape": _dims(o.shape)} for o in manifest.outputs],
        # Beyond the protocol, for the explorer page and curious clients: class names, and which
        # outputs are feature maps.
        "parameters": {"labels": list(manifest.labels), "roles": {o.name: o.role for o in manifest.outputs}},
    }


def _dims(shape) -> list[int]:
    return [-1 if d is None else int(d) for d in shape]


def parse_infer(body: bytes, header_length: str | None, manifest: Manifest) -> InferRequest:
    """Parse an infer request body (JSON alone, or JSON header + binary tensors).

    Raises:
        InputError: malformed JSON, a lying header length, an unknown input or output name, a wrong
            datatype, shape or byte count (NaN and range are checked later, by to_batch).
    """
    json_part, binary = _split(body, header_length)
    try:
        request = json.loads(json_part)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5000-digit integer, 100,000-deep nesting
        raise InputError(f"request is not valid JSON: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(request, dict):
        raise InputError(f"request must be a JSON object; got {type(request).__name__}")
    params = _object(request.get("parameters"), "request 'parameters'")
    inputs = request.get("inputs")
    expected = manifest.input.name
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InputError(f"request 'inputs' must be a list of one tensor named {expected!r}; got {_short(inputs)}")
    tensor = inputs[0]
    if tensor.get("name") != expected:
        raise InputError(f"unknown input {_short(tensor.get('name'))}; the model's input is {expected!r}")
    images = _tensor(tensor, binary, manifest)
    outputs, binary_out = _outputs(request.get("outputs"), params, manifest)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError(f"request 'id' must be a string; got {_short(request_id)}")
    return InferRequest(request_id, images, outputs, binary_out)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 <= n <= len(body):
        raise InputError(f"Inference-Header-Content-Length is {header_length!r}; expected an integer from 0 to "
                         f"the body's {len(body)} bytes")
    return body[:n], body[n:]


def _tensor(tensor: dict, binary: bytes, manifest: Manifest) -> np.ndarray:
    sample = list(manifest.input.image_shape)
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype not in INPUT_DTYPES:
        raise InputError(f"input datatype {_short(datatype)} is not accepted; expected one of {list(INPUT_DTYPES)}")
    ok = (isinstance(shape, list) and len(shape) == len(sample) + 1 and all(type(d) is int for d in shape)
          and shape[0] >= 1 and all(d == s or (s is None and 0 < d <= MAX_DIM) for d, s in zip(shape[1:], sample)))
    if not ok:
        shown = ", ".join(["N", *("any" if s is None else str(s) for s in sample)])
        raise InputError(f"input shape {_short(shape)} does not match the model's [{shown}] with N >= 1")
    dtype, count = INPUT_DTYPES[datatype], math.prod(shape)
    size = _object(tensor.get("parameters"), "input 'parameters'").get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise InputError("input has both 'data' and parameters.binary_data_size; expected one of them")
        if type(size) is not int or size != len(binary):
            raise InputError(f"input binary_data_size is {_short(size)} but {len(binary)} bytes follow the header")
        if size != count * dtype.itemsize:
            raise InputError(f"input of shape {shape} and datatype {datatype} needs {count * dtype.itemsize} bytes; "
                             f"got {size}")
        return np.frombuffer(binary, dtype).reshape(shape)
    if binary:
        raise InputError(f"{len(binary)} bytes follow the JSON header, but no input declares binary_data_size")
    if "data" not in tensor:
        raise InputError("input has neither 'data' nor parameters.binary_data_size")
    try:
        data = np.asarray(tensor["data"])
        if data.dtype.kind not in "iuf" or data.dtype == bool:
            raise ValueError(f"values of type {data.dtype}")
        if data.size != count:
            raise ValueError(f"{data.size} values for shape {shape} ({count} expected)")
        return _cast(data, dtype, datatype).reshape(shape)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InputError(f"input 'data' must be {count} numbers ({datatype}, flat or nested): {exc}") from None


def _cast(data: np.ndarray, dtype: np.dtype, datatype: str) -> np.ndarray:
    if dtype.kind == "u" and (data.dtype.kind == "f" or (data.size and (data.min() < 0 or data.max() > 255))):
        raise ValueError(f"{datatype} takes integers 0..255")
    return data.astype(dtype)


def _outputs(requested, params: dict, manifest: Manifest) -> tuple[list[str], dict[str, bool]]:
    default = params.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise InputError(f"parameters.binary_data_output must be true or false; got {_short(default)}")
    if requested is None:
        return manifest.output_names, dict.fromkeys(manifest.output_names, default)
    if not isinstance(requested, list) or not requested or not all(isinstance(o, dict) for o in requested):
        raise InputError("request 'outputs' must be a non-empty list of objects with a 'name'; "
                         f"got {_short(requested)}")
    names, binary = [], {}
    for item in requested:
        name = item.get("name")
        if name not in manifest.output_names:
            raise InputError(f"unknown output {_short(name)}; available: {manifest.output_names}")
        flag = _object(item.get("parameters"), f"output {name!r} 'parameters'").get("binary_data", default)
        if not isinstance(flag, bool):
            raise InputError(f"output {name!r} binary_data must be true or false; got {_short(flag)}")
        if name not in binary:
            names.append(name)
        binary[name] = flag
    return names, binary


def _object(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object; got {_short(value)}")
    return value


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def encode_infer(request: InferRequest, model_name: str, results: dict[str, np.ndarray]) -> tuple[list, dict]:
    """The response body as a list of byte chunks (JSON header first, then binary outputs), and its headers.

    Binary outputs are passed as memoryviews of the result arrays: joined once, never copied twice.
    """
    outputs, chunks = [], []
    for name in request.outputs:
        array = results[name]
        entry = {"name": name, "datatype": OUTPUT_DATATYPE, "shape": list(array.shape)}
        if request.binary[name]:
            data = np.ascontiguousarray(array, "<f4")
            entry["parameters"] = {"binary_data_size": data.nbytes}
            chunks.append(memoryview(data).cast("B"))
        else:
            entry["data"] = array.ravel().tolist()  # float32 -> float64 -> shortest repr: round-trips exactly
        outputs.append(entry)
    response = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not chunks:
        return [header], {"content-type": "application/json"}
    return [header, *chunks], {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
