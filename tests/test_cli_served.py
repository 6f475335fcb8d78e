"""`cotune finetune --base-url`: a program on a server; bad input stops before any trace or training."""

import subprocess
import sys

from cotune.lm import FakeLM
from cotune.serve.server import start_server


def cotune(*args):
    return subprocess.run([sys.executable, "-c", "from cotune.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_finetune_on_a_server_without_runtime_lora_names_the_endpoint_and_the_flags(tmp_path):
    base = tmp_path / "toy"
    base.mkdir()
    (base / "config.json").write_text("{}")
    fake = FakeLM(["Species: setosa"], name="toy")
    with start_server(fake) as server:
        result = cotune("finetune", "--base-url", server.url, "--model", "toy", "--base-model", str(base),
                        "--out", str(tmp_path / "out"), "--no-cache")  # fmt: skip
        assert server.requests_by_model == {}  # refused before any trace
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr
    for part in (f"server at {server.url} cannot load LoRA adapters at runtime", "/v1/load_lora_adapter",
                 "--enable-lora", "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):  # fmt: skip
        assert part in message, message
    assert "Traceback" not in result.stderr and fake.calls == []


def test_base_model_without_a_server_is_refused():
    result = cotune("finetune", "--base-model", "smollm2-135m")
    assert result.returncode == 2 and "`--base-model` is for a program on a server" in " ".join(result.stderr.split())
