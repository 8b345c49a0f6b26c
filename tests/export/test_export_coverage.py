"""A representative subset of benchmarks/results/architectures.md in CI: each row passes, or is refused by design
with its one line (python -m benchmarks.coverage runs them all)."""
from __future__ import annotations

import numpy as np
import pytest

import runtime
from benchmarks.architectures import ARCHITECTURES
from benchmarks.coverage import verdict
from export.graph import list_layers
from export.pipeline import export_model
from runtime.errors import ExportError

SUBSET = ("deeplab_atrous", "two_heads", "squeeze_excitation", "conv_attention", "two_inputs", "channels_first")


@pytest.mark.parametrize("name", SUBSET)
def test_row(tmp_path, name):
    arch = next(a for a in ARCHITECTURES if a.name == name)
    path = tmp_path / f"{name}{arch.suffix}"
    arch.build().save(path)
    if arch.refused:
        assert "_conv " in list_layers(path)  # --list-layers shows every model Keras loads, refused ones too
        with pytest.raises(ExportError, match=arch.refused) as info:
            export_model(path, tmp_path / "a")
        assert "\n" not in str(info.value) and verdict(arch, {"result": "refused", "message": str(info.value)}) \
            == "refused by design"
        return
    manifest = export_model(path, tmp_path / "a")
    assert manifest.verification["passed"] and len([o for o in manifest.outputs if o.role == "feature_map"]) >= 2
    if name == "two_heads":
        assert [o.name for o in manifest.outputs if o.role == "model_output"] == ["t_cls", "t_box"]
    with runtime.load(tmp_path / "a") as m:
        assert all(len(v) == 1 for v in m.run(np.zeros(m.manifest.input.shape[1:], np.uint8)).values())
