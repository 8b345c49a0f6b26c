"""Exported stand-ins for the Keras Applications families (tests/zoo.py APPLICATIONS), built once per session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def app_model_file(tmp_path_factory):
    """name -> path of an APPLICATIONS model saved as .keras (random weights)."""
    from zoo import APPLICATIONS

    folder = tmp_path_factory.mktemp("applications")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = folder / f"{name}.keras"
            APPLICATIONS[name]().save(cache[name])
        return cache[name]

    return get


@pytest.fixture(scope="session")
def app_artifacts(tmp_path_factory, app_model_file):
    """name -> artifacts folder of an APPLICATIONS model, exported once per session with default options."""
    from export.pipeline import export_model

    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = tmp_path_factory.mktemp(f"app_{name}") / "artifacts"
            export_model(app_model_file(name), cache[name])
        return cache[name]

    return get
