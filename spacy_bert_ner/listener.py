"""The transformer listener, with a batch id computed in array operations.

spacy-transformers' `TransformerListener` checks, at every training step, that it is handed the
docs the transformer encoded, by comparing a batch id: the sum of every token's ORTH hash, summed
in a Python loop over all tokens (a tenth of a training step once the encoder is fast). This
subclass computes the same number, exactly, from `Doc.to_array(ORTH)`. `trfs2arrays` pools each
doc's word pieces into token vectors for the whole batch in one gather (spacy-transformers' aligns
doc by doc).
"""

from typing import Callable, List, Tuple, cast

import numpy
from spacy.attrs import ORTH
from spacy.tokens import Doc
from spacy_transformers.data_classes import TransformerData
from spacy_transformers.layers import TransformerListener
from thinc.api import Model, to_numpy
from thinc.types import Floats2d, Ints1d, Ragged
from transformers.modeling_outputs import ModelOutput

LOW_BITS = numpy.uint64(0xFFFFFFFF)
SHIFT = numpy.uint64(32)


class FastTransformerListener(TransformerListener):
    """`spacy_transformers.layers.TransformerListener` with a vectorized `get_batch_id`."""

    @classmethod
    def get_batch_id(cls, inputs: List[Doc]) -> int:
        """sum(token.orth for doc in inputs for token in doc), as the base class computes it.

        ORTH hashes are 64-bit, so their sum overflows a uint64: the high and low 32-bit halves
        are summed separately (neither sum can overflow below 2**32 tokens) and joined as a
        Python int, which is exact.
        """
        if not inputs:
            return 0
        orths = numpy.concatenate([doc.to_array(ORTH) for doc in inputs]).astype(numpy.uint64)
        high = int((orths >> SHIFT).sum(dtype=numpy.uint64))
        low = int((orths & LOW_BITS).sum(dtype=numpy.uint64))
        return (high << 32) + low


def trfs2arrays(
    pooling: Model[Ragged, Floats2d], grad_factor: float
) -> Model[List[TransformerData], List[Floats2d]]:
    """spacy-transformers' `trfs2arrays`: each doc's word-piece vectors, pooled per token, with the
    same result and gradient, computed for the whole batch at once.

    The original aligns word pieces to tokens doc by doc (on a GPU: two host-to-device copies
    and a gather kernel per doc, forward and backward); here the batch's alignments are joined on
    the host, copied once, and applied in one gather (one scatter-add backward). The layer has the
    original's name, attributes and child, so pipelines trained with either load in both.
    """
    return Model(
        "trfs2arrays", _trfs2arrays_forward, layers=[pooling], attrs={"grad_factor": grad_factor}
    )


def _trfs2arrays_forward(
    model: Model, trf_datas: List[TransformerData], is_train: bool
) -> Tuple[List[Floats2d], Callable]:
    pooling: Model[Ragged, Floats2d] = model.layers[0]
    ops = model.ops
    for trf_data in trf_datas:
        if not isinstance(trf_data, TransformerData):
            raise ValueError(
                "Expected spacy_transformers.data_classes.TransformerData in trf_data, got: "
                f"{type(trf_data)}. Check that the pipeline has a transformer component with a "
                "spacy-transformers TransformerModel architecture."
            )
    # Docs the transformer saw (empty docs have no output, and get a (0, 0) array, as upstream).
    encoded = [
        i
        for i, trf_data in enumerate(trf_datas)
        if "last_hidden_state" in trf_data.model_output
        and trf_data.model_output["last_hidden_state"].size
    ]
    outputs: List[Floats2d] = [ops.alloc2f(0, 0) for _ in trf_datas]
    if not encoded:
        return outputs, lambda d_outputs: []
    hidden = [trf_datas[i].model_output["last_hidden_state"] for i in encoded]
    sources = [ops.reshape2f(h, -1, trf_datas[i].width) for i, h in zip(encoded, hidden)]
    source_rows = numpy.cumsum([0] + [len(s) for s in sources])
    # Each doc's alignment indexes its own rows: shift it to the doc's rows in the joined batch.
    # A doc none of whose tokens has a word piece gets, as upstream, one zero row per token (the
    # row appended after the docs' rows; its gradient is dropped).
    zero_row = int(source_rows[-1])
    indices_: List[numpy.ndarray] = []
    lengths_: List[numpy.ndarray] = []
    for i, start in zip(encoded, source_rows):
        align = trf_datas[i].align
        lengths = to_numpy(align.lengths).astype("int32")
        if lengths.sum():
            indices_.append(to_numpy(align.dataXd).astype("int32") + start)
            lengths_.append(lengths)
        else:
            indices_.append(numpy.full(len(lengths), zero_row, dtype="int32"))
            lengths_.append(numpy.ones(len(lengths), dtype="int32"))
    indices = ops.asarray1i(cast(Ints1d, numpy.concatenate(indices_)))
    X = ops.xp.concatenate(sources + [ops.alloc2f(1, sources[0].shape[1], dtype=sources[0].dtype)])
    pooled, backprop_pooling = pooling(
        Ragged(X[indices], ops.asarray1i(cast(Ints1d, numpy.concatenate(lengths_)))), is_train
    )
    n_tokens = numpy.cumsum([len(lengths) for lengths in lengths_])
    for i, Y in zip(encoded, ops.xp.split(pooled, n_tokens[:-1].tolist())):
        outputs[i] = Y

    def backprop(d_outputs: List[Floats2d]) -> List[TransformerData]:
        d_pooled = ops.xp.concatenate([d_outputs[i] for i in encoded])
        d_tokens = backprop_pooling(d_pooled).dataXd
        dX = ops.alloc2f(*X.shape, dtype=X.dtype)
        ops.scatter_add(dX, indices, d_tokens)
        dX *= model.attrs["grad_factor"]
        d_trf_datas = []
        for i, h, start, end in zip(encoded, hidden, source_rows[:-1], source_rows[1:]):
            d_trf_datas.append(
                TransformerData(
                    model_output=ModelOutput(last_hidden_state=dX[start:end].reshape(h.shape)),
                    wordpieces=trf_datas[i].wordpieces,
                    align=trf_datas[i].align,
                )
            )
        return d_trf_datas

    return outputs, backprop
