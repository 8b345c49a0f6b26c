"""A manifest that parses but lies is refused when it is read: one-line ArtifactErrors, never a traceback."""
from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
from mutations import Mutations

import runtime
from runtime.artifacts.manifest import MAX_DEPTH, MAX_MANIFEST_BYTES, Manifest, read_manifest
from runtime.errors import ArtifactError


@pytest.fixture(scope="module")
def good(reference_artifacts) -> dict:
    return json.loads((reference_artifacts / "manifest.json").read_text())


def put(d: dict, path: str, value) -> None:
    """Set d[a][b]... for path "a.b" ("outputs.1.name" indexes lists); value DELETE removes the key."""
    *parents, last = path.split(".")
    for key in parents:
        d = d[int(key)] if isinstance(d, list) else d[key]
    last = int(last) if isinstance(d, list) else last
    if value is DELETE:
        del d[last]
    else:
        d[last] = value


DELETE = object()
NAN = float("nan")
# field -> bad value -> part of the one-line message
LIES = [
    ("schema_version", True, "schema_version is True"),
    ("schema_version", 1.0, "schema_version is 1.0"),
    ("input.shape", "abc", "input.shape must be"),
    ("input.shape", [None, 28, 28], "input.shape must be"),
    ("input.shape", [None, 28, 10**12, 1], "input.shape must be"),
    ("input.shape", [None, 28, True, 1], "input.shape must be"),
    ("input.name", "other", "input.name must be 'image'"),
    ("input.preprocessing.scale", "abc", "preprocessing.scale must be a finite non-zero number"),
    ("input.preprocessing.scale", None, "preprocessing.scale must be a finite non-zero number"),
    ("input.preprocessing.scale", NAN, "preprocessing.scale must be a finite non-zero number"),
    ("input.preprocessing.scale", 0, "preprocessing.scale must be a finite non-zero number"),
    ("input.preprocessing.offset", float("inf"), "preprocessing.offset must be a finite number"),
    ("input.preprocessing.raw_dtype", "float64", "raw_dtype must be one of ['uint8', 'float32'"),
    ("outputs", [], "outputs must be a list of 1 to 100000 outputs"),
    ("outputs.1.name", "../../escaped", "'../../escaped' is not allowed"),
    ("outputs.1.name", "/abs/victim", "'/abs/victim' is not allowed"),
    ("outputs.1.name", "x" * 300, "is not allowed: expected 1-128 characters"),
    ("outputs.1.name", "dense_1", "outputs[1].name must be a name used once"),
    ("outputs.1.role", "weights", "outputs[1].role must be one of"),
    ("outputs.1.shape", [None, -26, 26, 32], "outputs[1].shape must be"),
    ("outputs.1.layout", "NH WC", "outputs[1].layout must be"),
    ("outputs.1.extra", 1, "unknown field(s) ['extra']"),
    ("labels", "0123456789", "labels must be a list of strings"),
    ("labels.0", 7, "labels[0] must be a string"),
    ("verification", [], "verification must be an object"),
    ("created", 5, "created must be a string"),
]
FILE_LIES = [
    ("saved_model/../../../../etc/passwd", "leaves the folder"),
    ("/etc/passwd", "leaves the folder"),
    ("saved_model\\..\\..\\x", "not a relative path"),
    ("", "not a relative path"),
    ("manifest.json", "entries other than manifest.json"),
]


@pytest.mark.parametrize("field, value, message", LIES, ids=lambda v: str(v)[:40])
def test_lying_fields_are_refused_on_read(good, field, value, message):
    d = copy.deepcopy(good)
    put(d, field, value)
    with pytest.raises(ArtifactError, match=f".*{_re(message)}") as info:
        Manifest.from_dict(d)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("rel, message", FILE_LIES, ids=str)
def test_file_entries_that_leave_the_folder_are_refused_before_any_stat(good, tmp_path, rel, message):
    d = copy.deepcopy(good)
    d["files"][rel] = {"sha256": "0" * 64, "bytes": 1}
    with pytest.raises(ArtifactError, match=_re(message)):
        Manifest.from_dict(d)  # no folder at all: the text alone is refused


@pytest.mark.parametrize("meta", [{"sha256": "0" * 64}, {"sha256": "Z" * 64, "bytes": 1},
                                  {"sha256": "0" * 64, "bytes": True}, {"sha256": "0" * 64, "bytes": -1}, "abc"])
def test_malformed_file_entries(good, meta):
    d = copy.deepcopy(good)
    d["files"]["model.onnx"] = meta
    with pytest.raises(ArtifactError, match=r"files\['model.onnx'\]"):
        Manifest.from_dict(d)


def test_nan_scale_never_reaches_a_run(artifacts_copy, good):
    """`scale: NaN` once made every output all-NaN with exit 0: now the folder does not load."""
    text = json.dumps(good).replace('"scale": ' + json.dumps(good["input"]["preprocessing"]["scale"]), '"scale": NaN')
    (artifacts_copy / "manifest.json").write_text(text)
    with pytest.raises(ArtifactError, match="preprocessing.scale must be a finite non-zero number.*got nan"):
        runtime.load(artifacts_copy)


def test_deep_nesting_is_one_line_not_a_recursion_error(artifacts_copy, good):
    for depth, message in [(100_000, "not readable JSON|nested deeper"), (MAX_DEPTH + 5, "nested deeper than")]:
        text = json.dumps(good)[:-1] + ', "verification": ' + "[" * depth + "]" * depth + "}"
        (artifacts_copy / "manifest.json").write_text(text)
        with pytest.raises(ArtifactError, match=message):
            read_manifest(artifacts_copy, verify_files=False)


def test_huge_manifest_is_refused_without_reading_it_all(artifacts_copy, good):
    path = artifacts_copy / "manifest.json"
    with open(path, "w") as f:
        f.write(json.dumps(good)[:-1])
        f.seek(MAX_MANIFEST_BYTES + 100)  # sparse: a huge file that costs no disk
        f.write("}")
    with pytest.raises(ArtifactError, match="larger than 16 MiB"):
        runtime.load(artifacts_copy)


def _re(text: str) -> str:
    import re

    return re.escape(text)


# --- fuzz: a few hundred mutated manifests end in an ArtifactError or a correct load ------------

ODD = [None, True, False, 0, -1, 1.5, float("nan"), 10**30, "", "../x", "/etc/passwd", "x" * 2000, "\x00",
       [], [None], {}, {"a": {"b": []}}, "ü名", 2**63]


MUTATIONS = Mutations(ODD)


def test_fuzzed_manifests_end_in_artifact_error_or_a_correct_load(good, artifacts_copy, digits):
    rng = random.Random(9)
    outcomes = {"refused": 0, "loaded": 0}
    for i in range(400):
        mutated = MUTATIONS.mutate(good, rng)
        try:
            manifest = Manifest.from_dict(json.loads(json.dumps(mutated)))
        except ArtifactError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 600, (i, str(exc)[:300])
            outcomes["refused"] += 1
            continue
        # Accepted: it must round-trip and, written into a real folder, load and run or be refused cleanly.
        assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
        if outcomes["loaded"] >= 20:  # enough real loads: the rest only validate, to keep this fast
            outcomes["loaded"] += 1
            continue
        (artifacts_copy / "manifest.json").write_text(json.dumps(mutated))
        try:
            with runtime.load(artifacts_copy) as model:
                out = model.run(digits[0][:2])
            assert set(out) == set(manifest.output_names) and all(np.isfinite(v).all() for v in out.values())
            outcomes["loaded"] += 1
        except ArtifactError as exc:
            assert "\n" not in str(exc), (i, str(exc)[:300])
            outcomes["refused"] += 1
    assert outcomes["refused"] > 150 and outcomes["loaded"] > 10, outcomes  # both kinds, in numbers
