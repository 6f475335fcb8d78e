"""The KV cache of a decoding batch (`cotune.lm.engine.decode`): layers that grow in place, and rows cut or added.

transformers' dynamic cache concatenates a step's keys and values onto the whole cache at every step; the
growing layer appends into buffers with room ahead. A batch also changes its rows while it decodes: finished
rows leave (``batch_select_indices``, then `trim_left_padding`), and requests that arrive meanwhile join
(`append_rows`: their own prefilled cache right-aligned beside the batch's, the mask hiding the padding).

torch and transformers are imported when these run, never when this module is imported.
"""

from __future__ import annotations

import functools
from typing import Any


def append_rows(cache: Any, index: Any, mask: Any, joined: Any, joined_mask: Any) -> Any:
    """Keep rows ``index`` of ``cache`` and append ``joined``'s rows after them, both right-aligned in a block as
    wide as the wider (the mask hides the padding on the left); returns the new attention mask."""
    width = max(mask.shape[1], joined_mask.shape[1])
    kept = len(index)
    out_mask = mask.new_zeros((kept + joined_mask.shape[0], width))
    out_mask[:kept, width - mask.shape[1] :] = mask[index]
    out_mask[kept:, width - joined_mask.shape[1] :] = joined_mask
    for layer, other in zip(cache.layers, joined.layers, strict=True):
        for name in ("keys", "values"):
            mine, theirs = getattr(layer, name)[index], getattr(other, name)
            both = mine.new_zeros((out_mask.shape[0], *mine.shape[1:-2], width, mine.shape[-1]))
            both[:kept, ..., width - mine.shape[-2] :, :] = mine
            both[kept:, ..., width - theirs.shape[-2] :, :] = theirs
            setattr(layer, name, both)  # no longer a view of the layer's buffers: they are rebuilt at its next update
    return trim_left_padding(out_mask, cache)


def trim_left_padding(mask: Any, cache: Any) -> Any:
    """Drop the leading columns that are padding in every live row, from the mask and the KV cache."""
    seen = mask.any(dim=0)
    first = int(seen.int().argmax())
    if first == 0:
        return mask
    for layer in cache.layers:
        layer.keys = layer.keys[..., first:, :]
        layer.values = layer.values[..., first:, :]
    return mask[:, first:]


def is_growing(layer: Any) -> bool:
    return type(layer) is growing_class()


def growing(layer: Any) -> Any:
    """``layer`` (a plain `DynamicLayer`) as a `_GrowingLayer`; other layer kinds are kept as they are."""
    from transformers.cache_utils import DynamicLayer

    return growing_class()() if type(layer) is DynamicLayer else layer


@functools.cache
def growing_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A dynamic cache layer whose keys and values are views of buffers with room to append in place.

        Anything that replaces ``keys``/``values`` (row selection, trimming) is noticed at the next update
        (they are no longer views of the buffers), and the buffers are rebuilt from them then.
        """

        buffers = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.keys.shape[-2] if self.keys.dim() == 4 else 0
            add = key_states.shape[-2]
            if not self._in_buffers(n) or n + add > self.buffers[0].shape[-2]:
                room = n + add + max(n + add, 64)  # doubling: appends cost O(1) copies per token overall
                shape = (*key_states.shape[:2], room, key_states.shape[-1])
                self.buffers = (key_states.new_empty(shape), value_states.new_empty(shape))
                if n:
                    self.buffers[0][:, :, :n] = self.keys
                    self.buffers[1][:, :, :n] = self.values
            keys, values = self.buffers
            keys[:, :, n : n + add] = key_states
            values[:, :, n : n + add] = value_states
            self.keys, self.values = keys[:, :, : n + add], values[:, :, : n + add]
            return self.keys, self.values

        def _in_buffers(self, n: int) -> bool:
            if self.buffers is None or n == 0:
                return False
            keys, values = self.buffers
            return (
                self.keys.data_ptr() == keys.data_ptr()
                and self.values.data_ptr() == values.data_ptr()
                and self.keys.shape[0] == keys.shape[0]
            )

    return GrowingLayer
