"""What callers may ask any LM is declared on `LM`, with defaults a backend overrides: nobody probes."""

from pathlib import Path

import httpx

from cotune.lm import FakeLM
from cotune.lm.base import LM, AdapterAddress
from cotune.lm.completion import Completion
from cotune.lm.remote.openai_compat import OpenAICompatible
from cotune.program.predict import Predict

MSG = [{"role": "user", "content": "hi"}]


class Minimal(LM):
    """A backend that declares nothing beyond what it must (and skips ``LM.__init__``'s settings)."""

    def __init__(self):
        self.cache, self.config = None, FakeLM(["x"]).config

    model = "minimal"

    def _generate(self, batch, config):
        return [Completion("Answer: x") for _ in batch]


def test_a_backend_that_declares_nothing_gets_the_defaults():
    lm = Minimal()
    assert (lm.served_identity(), lm.count_prompt_tokens(MSG), lm.context_length, lm.engine) == (None, None, None, None)
    assert not lm.constrained and lm.structured_output is None and lm.adapter_address is AdapterAddress.FOLDER
    assert lm.close() is None and lm.adapter_ref("/runs/r") is None
    assert Predict("question -> answer").bind(lm).structured_output() is None


def test_a_saved_adapter_is_named_the_way_its_backend_loads_it(tmp_path):
    local = FakeLM(["x"], adapter=str(tmp_path / "seed-0" / "w" / "adapter"))
    assert local.adapter_ref(tmp_path) == str(Path("seed-0") / "w" / "adapter")  # a folder moves with the run

    def handler(request):
        return httpx.Response(200, json={"data": []})

    served = OpenAICompatible("m", cache=False, transport=httpx.MockTransport(handler)).with_adapter("m-lora-1a2b")
    assert served.adapter_ref(tmp_path) == "m-lora-1a2b"  # a name the server knows, not a path

    class OtherServer(FakeLM):  # any backend that declares served names, whatever its name
        backend = "my-server"
        adapter_address = AdapterAddress.SERVED_NAME

    assert OtherServer(["x"], adapter="tuned").adapter_ref(tmp_path) == "tuned"
