"""The local engine: a transformers model on this machine, its batching thread and cotune's decoding loop.

`hf.HFLM` is the LM; `hf_engine.HFEngine` owns the model, the tokenizer and the thread every HFLM on it
submits to. Everything here imports torch when used, never when imported.
"""
