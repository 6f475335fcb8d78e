"""Fine-tuning: traces → chat examples (`sft_data`), LoRA training with PEFT (`lora`), its configs (`config`:
the adapter's shape, `LoRAConfig`, and how it is trained, `TrainingConfig`), the `Trainer` seam the Θ step
trains through (`trainer`; TRL's SFTTrainer behind it in `trl_trainer`), the frozen-trunk cache for
``top_layers`` (`trunk`).

torch, transformers, peft and trl are imported only when training runs.
"""

from cotune.training.config import LoRAConfig, TrainingConfig
from cotune.training.lora import TrainResult, read_adapter_metadata, train_lora
from cotune.training.sft_data import ChatExample, chat_examples, data_hash, tokenize
from cotune.training.trainer import LocalTrainer, Trainer, build_trainer, resolve_trainer
from cotune.training.trl_trainer import TRLTrainer

__all__ = [
    "ChatExample",
    "LoRAConfig",
    "LocalTrainer",
    "TRLTrainer",
    "TrainResult",
    "Trainer",
    "TrainingConfig",
    "build_trainer",
    "chat_examples",
    "data_hash",
    "read_adapter_metadata",
    "resolve_trainer",
    "tokenize",
    "train_lora",
]
