"""Fine-tuning: traces → chat examples (`sft_data`), LoRA training with PEFT (`lora`), its config (`config`).

torch, transformers and peft are imported only when training runs.
"""

from cotune.training.config import LoRAConfig
from cotune.training.lora import TrainResult, read_adapter_metadata, train_lora
from cotune.training.sft_data import ChatExample, chat_examples, data_hash, strip_demos, tokenize

__all__ = [
    "ChatExample",
    "LoRAConfig",
    "TrainResult",
    "chat_examples",
    "data_hash",
    "read_adapter_metadata",
    "strip_demos",
    "tokenize",
    "train_lora",
]
