"""Shared by the training tests: the real SmolLM2-135M for inference checks (float32, no request cache)."""

import pytest


@pytest.fixture(scope="module")
def smol():
    from cotune.lm import registry

    lm = registry.load("smollm2-135m", dtype="float32", cache=False)
    yield lm
    lm.close()
