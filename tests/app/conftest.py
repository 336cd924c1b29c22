"""Fixtures shared by the decoding tests of tests/app."""

from __future__ import annotations

import pytest

from app.bundle import InputSpec, load_bundle
from app.imaging import ImageLimits
from app.ingest import limits_from
from app.settings import Settings
from tests.conftest import ROOT


@pytest.fixture(scope="session")
def imagenet_spec() -> InputSpec:
    """The input spec of the shipped imagenet bundle (a 224 px centre crop)."""
    return load_bundle(ROOT / "models" / "imagenet").metadata.input


@pytest.fixture(scope="session")
def default_limits() -> ImageLimits:
    """The image limits of a server with default settings."""
    return limits_from(Settings())
