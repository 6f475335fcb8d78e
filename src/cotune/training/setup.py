"""The training copy of a model: the device, the base weights, and the LoRA adapter on top (new or continued).

``top_layers`` puts the adapter on the last N decoder layers only (PEFT's ``layers_to_transform``); with
``target_modules="all-linear"`` the layers' linear modules are then named, as PEFT needs a list there.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from cotune.errors import TrainingError
from cotune.training.config import LoRAConfig, TrainingConfig
from cotune.training.scoped import init_lora_weights
from cotune.training.trunk import decoder_layers


def training_device(training: TrainingConfig, torch: Any) -> str:
    if training.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device='cuda' but torch sees no CUDA device; use device='auto' or 'cpu'")
    if training.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return training.device


def load_for_training(
    base_model_path: str | Path,
    init_adapter: str | Path | None,
    lora: LoRAConfig,
    training: TrainingConfig,
    device: str,
):
    """A fresh training copy of the base model (the inference copy stays untouched), wrapped with a LoRA adapter
    of ``lora``'s shape (or ``init_adapter``, continued)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(base_model_path, "config.json").is_file():
        raise TrainingError(f"base model folder {base_model_path} has no config.json (need a local HF model folder)")
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_path))
    # bf16 (CUDA with native bf16): frozen base weights in bf16, half the memory and no per-call cast.
    dtype = torch.bfloat16 if training.trains_in_bf16(device) else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base_model_path), dtype=dtype).to(device)
    except OSError as e:
        raise TrainingError(f"cannot load the base model from {base_model_path}: {e}") from e
    model.config.use_cache = False
    if training.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    try:
        with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecates
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            if init_adapter is not None:
                model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
            else:
                peft_config = LoraConfig(
                    r=lora.r,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=_target_modules(model, lora),
                    task_type="CAUSAL_LM",
                    bias="none",
                    layers_to_transform=_top_layers(model, lora),
                )
                # peft draws its initial weights from torch's default generator: keep that generator's state
                # as it was, then draw the adapter's A matrices again from a generator of our own.
                with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
                    model = get_peft_model(model, peft_config)
                init_lora_weights(model, training.seed)
    except (ValueError, KeyError, OSError) as e:
        raise TrainingError(f"PEFT refused the LoRA setup for {base_model_path}: {e}") from e
    for p in model.parameters():  # adapter weights train in float32 even over a bf16 base
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return tokenizer, model


def _target_modules(model: Any, lora: LoRAConfig) -> str | list[str]:
    """PEFT's target_modules; "all-linear" with ``top_layers`` becomes the names of the decoder layers' linear
    modules (PEFT takes a layer subset only with a list of names)."""
    import torch

    if not isinstance(lora.target_modules, str):
        return list(lora.target_modules)
    if lora.top_layers is None or lora.target_modules != "all-linear":
        return lora.target_modules
    found = decoder_layers(model)
    if found is None:
        raise TrainingError(
            "top_layers needs a model with a list of decoder layers; this one has none that cotune finds"
        )
    return sorted({n.rsplit(".", 1)[-1] for n, m in found[2].named_modules() if isinstance(m, torch.nn.Linear)})


def _top_layers(model: Any, lora: LoRAConfig) -> list[int] | None:
    """The indices of the last ``lora.top_layers`` decoder layers (None: every layer)."""
    if lora.top_layers is None:
        return None
    n = model.config.num_hidden_layers
    if lora.top_layers > n:
        raise TrainingError(f"top_layers={lora.top_layers}, but the model has {n} decoder layers; choose 1..{n}")
    return list(range(n - lora.top_layers, n))
