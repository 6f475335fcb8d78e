from __future__ import annotations

import pytest

from cotune import hardware
from cotune.hardware import cpu_flags, cpu_has_bf16

AVX2_ONLY = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


@pytest.mark.parametrize(
    "text,expected",
    [
        (AVX2_ONLY, {"fpu", "sse2", "avx", "avx2", "fma"}),
        (SAPPHIRE_RAPIDS, {"fpu", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        (ARM, {"fp", "asimd", "bf16", "i8mm"}),
        ("processor\t: 0\n", None),
    ],
)
def test_cpu_flags_parses_cpuinfo(text, expected):
    flags = cpu_flags(text)
    assert (flags if flags is None else set(flags)) == expected


@pytest.mark.parametrize("text,fast", [(AVX2_ONLY, False), (SAPPHIRE_RAPIDS, True), (ARM, True)])
def test_listed_flags_decide_without_a_benchmark(monkeypatch, text, fast):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: cpu_has_bf16(text))
    monkeypatch.setattr(hardware, "_bf16_matmul_faster", lambda torch: pytest.fail("benchmarked despite flags"))
    hardware.bf16_is_fast.cache_clear()
    try:
        assert hardware.bf16_is_fast("cpu") is fast
    finally:
        hardware.bf16_is_fast.cache_clear()


def test_without_cpuinfo_it_races_a_matmul(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: None)
    calls = []
    monkeypatch.setattr(hardware, "_bf16_matmul_faster", lambda torch: calls.append(1) or True)
    hardware.bf16_is_fast.cache_clear()
    try:
        assert hardware.bf16_is_fast("cpu") is True and hardware.bf16_is_fast("cpu") is True
        assert calls == [1]  # measured once per process
    finally:
        hardware.bf16_is_fast.cache_clear()


def test_auto_dtype_follows_the_hardware(monkeypatch):
    from cotune.lm.engine import hf_engine as hf

    monkeypatch.setattr(hf, "bf16_is_fast", lambda device: False)
    assert hf.resolve_dtype("auto", "cpu") == "float32"
    monkeypatch.setattr(hf, "bf16_is_fast", lambda device: True)
    assert hf.resolve_dtype("auto", "cpu") == "bfloat16"
    assert hf.resolve_dtype("bf16", "cpu") == "bfloat16"  # an explicit choice is kept
