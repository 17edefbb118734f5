"""The transformer listener, with a batch id computed in array operations.

spacy-transformers' `TransformerListener` checks, at every training step, that it is handed the
docs the transformer encoded, by comparing a batch id: the sum of every token's ORTH hash, summed
in a Python loop over all tokens (a tenth of a training step once the encoder is fast). This
subclass computes the same number, exactly, from `Doc.to_array(ORTH)`.
"""

from typing import List

import numpy
from spacy.attrs import ORTH
from spacy.tokens import Doc
from spacy_transformers.layers import TransformerListener

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
