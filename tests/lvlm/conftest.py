"""LVLM test fixtures (tiny models are built once per session into a temporary cache: tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def lvlm_loop():
    """The training loop module (LVLM recipes need no patches: soft prompts, projector weights
    and generative evaluation are handled by the loop itself)."""
    import tunevl.train.loop as loop

    return loop
