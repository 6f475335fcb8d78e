"""Keep the output head on the fast matrix path: it projects a contiguous hidden state.

``logits_to_keep=1`` (how cotune's decoder and transformers' ``generate`` ask for the next token's logits) makes
the model project ``hidden[:, -1:, :]``, a view whose rows lie a whole sequence apart. torch's ``matmul`` turns
such a (batch, 1, hidden) input into one matrix product only when autograd records or the view flattens
without a copy; otherwise it broadcasts the head's weight to (batch, hidden, vocab), copies it, and runs a
batched product. A model whose weights do not require grad (every merged-adapter copy) took that path: for
SmolLM2-135M (a 49152 × 576 head) each prefill copied batch × 57 MB, and a 32-row, 40-token prefill took
2.3 s instead of 0.29 s, so a call on an adapter cost ~4× a call on the base model. A forward pre-hook on the
head makes its input contiguous (batch × hidden values), and the product always folds.
"""

from __future__ import annotations

from typing import Any

_MARK = "_cotune_contiguous_input"


def contiguous_head_input(model: Any) -> Any:
    """Give ``model``'s output head a contiguous input from now on (copies made later keep the hook); returns
    ``model``. Models without an output head are left as they are."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, _MARK, False):
        head.register_forward_pre_hook(_contiguous)
        setattr(head, _MARK, True)
    return model


def _contiguous(_module: Any, args: tuple) -> tuple | None:
    if args and hasattr(args[0], "is_contiguous") and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None
