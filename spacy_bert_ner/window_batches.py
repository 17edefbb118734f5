"""A long document's windows encoded in prediction a window batch at a time (`encode`, which
`transformer_model.forward` calls): windows of similar length together, each batch padded to its
own longest window, into one output for all windows."""

from typing import Any, Callable, Dict, List, Tuple

import numpy
import torch
from spacy_transformers.data_classes import WordpieceBatch
from thinc.api import Model
from transformers.file_utils import ModelOutput

# Padded word pieces (windows x their padded length) encoded in one pass in prediction: a batch
# of more (a long document: 1M characters make ~2,000 windows) is encoded a window batch at a time.
# ~150 MB of attention scores for a 12-head encoder, and as fast on CPU as larger passes.
WINDOW_BATCH_PIECES = 8192


def encode(
    transformer: Model, wordpieces: WordpieceBatch, is_train: bool
) -> Tuple[ModelOutput, Callable]:
    """The encoder's output for a batch of windows, and its backward pass. In prediction, a batch
    of more than `WINDOW_BATCH_PIECES` padded word pieces is encoded a window batch at a time into
    one preallocated output: encoding all windows at once holds the attention scores of every
    window (windows x heads x length² floats: 5-7 GB for a 1M-character document), where a window
    batch holds a few hundred MB. The windows are batched by length (`window_batches`), each batch
    padded to its own longest window, not the document's: the longest of thousands of windows is
    far longer than most (5M characters took 779 s padded to it, 368 s batched by length).
    Windows do not attend to each other or to padding, so each window's output at its word pieces
    is the single pass's (to float rounding); its padding, which nothing reads, is zero past its
    batch's longest window. Training encodes in one pass, since its backward pass needs every
    window's activations anyway."""
    n_windows, width = wordpieces.input_ids.shape
    if is_train or n_windows <= max(1, WINDOW_BATCH_PIECES // max(width, 1)):
        return transformer(wordpieces, is_train)
    merged: Dict[str, List[torch.Tensor]] = {}  # each output's tensors, for all windows
    for windows, length in window_batches(wordpieces):
        output, _ = transformer(_trimmed(wordpieces, windows, length), False)
        rows = torch.as_tensor(windows)
        for key, value in output.items():
            parts = _tensors(value)
            if not parts:
                continue
            if key not in merged:
                shapes = [_full_shape(key, part.shape, n_windows, width) for part in parts]
                merged[key] = [part.new_zeros(shape) for part, shape in zip(parts, shapes)]
            for target, part in zip(merged[key], parts):
                index: Tuple[Any, ...] = (rows.to(part.device), *_sequence_slices(key, part))
                target[index] = part
    # Each output as the encoder gives it: a tensor, or a tuple of them (hidden_states).
    outputs = {
        key: tuple(merged[key]) if isinstance(value, tuple) else merged[key][0]
        for key, value in output.items()
        if key in merged
    }

    def backprop(d_output: Any) -> Any:
        raise ValueError("Window batches are encoded in prediction only, without a backward pass.")

    return type(output)(**outputs), backprop


# A window batch's padded length is its longest window's, rounded up to a multiple of this: few
# distinct shapes, so that each batch's work space fits in memory an earlier one freed (at 1M
# characters, exact lengths left 0.2 GB more held by the allocator, in about the same time).
LENGTH_STEP = 16


def window_batches(wordpieces: WordpieceBatch) -> List[Tuple[numpy.ndarray, int]]:
    """The windows of `wordpieces` in batches of similar length, longest first, each with at most
    `WINDOW_BATCH_PIECES` word pieces once padded to its longest window (rounded up to a multiple
    of `LENGTH_STEP`; a longer window alone): (the windows' positions, their padded length). A
    tokenizer that pads on the left gets batches of the full width."""
    mask = numpy.asarray(wordpieces.attention_mask) > 0
    n_windows, width = mask.shape
    lengths = mask.sum(axis=1)
    if not (mask == (numpy.arange(width) < lengths[:, None])).all():  # padded on the left
        lengths = numpy.full(n_windows, width)
    order = numpy.argsort(-lengths, kind="stable")
    batches: List[Tuple[numpy.ndarray, int]] = []
    start = 0
    while start < n_windows:
        length = min(-(-max(int(lengths[order[start]]), 1) // LENGTH_STEP) * LENGTH_STEP, width)
        stop = min(n_windows, start + max(1, WINDOW_BATCH_PIECES // length))
        batches.append((order[start:stop], length))
        start = stop
    return batches


def _trimmed(wordpieces: WordpieceBatch, windows: numpy.ndarray, length: int) -> WordpieceBatch:
    """The `windows` of `wordpieces`, their padding cut to `length` word pieces."""
    input_ids: Any = wordpieces.input_ids
    attention_mask: Any = wordpieces.attention_mask
    token_type_ids: Any = wordpieces.token_type_ids
    return WordpieceBatch(
        strings=[wordpieces.strings[i][:length] for i in windows],
        input_ids=input_ids[windows, :length],
        attention_mask=attention_mask[windows, :length],
        lengths=[wordpieces.lengths[i] for i in windows],
        token_type_ids=None if token_type_ids is None else token_type_ids[windows, :length],
    )


def _tensors(value: Any) -> List[torch.Tensor]:
    """An encoder output's tensors: the output itself, or those of a tuple of tensors; none for
    anything else (a scalar, None)."""
    if isinstance(value, torch.Tensor) and value.dim():
        return [value]
    if isinstance(value, tuple) and value and all(isinstance(t, torch.Tensor) for t in value):
        return list(value)
    return []


def _full_shape(key: str, shape: torch.Size, n_windows: int, width: int) -> Tuple[int, ...]:
    """The shape of an output for all `n_windows` windows at their full `width`, from a window
    batch's `shape`."""
    full = [n_windows, *shape[1:]]
    for dim in _sequence_dims(key, len(shape)):
        full[dim] = width
    return tuple(full)


def _sequence_dims(key: str, ndim: int) -> Tuple[int, ...]:
    """The dimensions of a Hugging Face output that run over the word pieces: both last of the
    attention scores (windows, heads, pieces, pieces), the second of a hidden state (windows,
    pieces, width); none of a pooled output (windows, width)."""
    if key in ("attentions", "cross_attentions"):
        return (ndim - 2, ndim - 1)
    return (1,) if ndim >= 3 else ()


def _sequence_slices(key: str, part: torch.Tensor) -> Tuple[slice, ...]:
    """Index of a window batch's output within the full output, past the windows' dimension."""
    dims = _sequence_dims(key, part.dim())
    return tuple(slice(0, n) if d in dims else slice(None) for d, n in enumerate(part.shape) if d)
