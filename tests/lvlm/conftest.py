"""LVLM test fixtures: tiny models built once per session into a temporary cache."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory):
    import os

    os.environ["TUNEVL_CACHE"] = str(tmp_path_factory.mktemp("tunevl_cache"))
    yield


@pytest.fixture
def lvlm_loop():
    """The training loop module (LVLM recipes need no patches: soft prompts, projector weights
    and generative evaluation are handled by the loop itself)."""
    import tunevl.train.loop as loop

    return loop
