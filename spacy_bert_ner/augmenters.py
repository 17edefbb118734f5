"""Training-data augmentation: documents of mixed length, so one sentence alone is tagged well too.

Training on documents of N sentences teaches the model to lean on the sentences around a token; at
prediction time users often call `nlp(sentence)`, and that context is gone. `context_mix.v1` keeps
some training documents whole and cuts the others, at sentence boundaries, into pieces of 1 to
`max_sents` sentences, so the model sees every context length from one sentence to the whole
document. Set it as the training corpus' augmenter:

    [corpora.train.augmenter]
    @augmenters = "spacy_bert_ner.context_mix.v1"
    whole_fraction = 0.25
    max_sents = 10
"""

import random
from typing import Callable, Iterator, List

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import registry

from .distillation import slice_teacher_targets

Augmenter = Callable[[Language, Example], Iterator[Example]]


@registry.augmenters("spacy_bert_ner.context_mix.v1")
def create_context_mix(whole_fraction: float = 0.25, max_sents: int = 10) -> Augmenter:
    """Keep a document whole with probability `whole_fraction`; otherwise cut it into pieces of
    1..`max_sents` consecutive sentences. A piece of n sentences is drawn with probability
    proportional to 1/n, so each context length gets about the same share of the cut documents'
    tokens (a uniform draw would leave single sentences 2% of them). Documents without sentence
    boundaries (one tweet, one JSONL record) and one-sentence documents pass through unchanged.
    Entities never cross a sentence boundary in the converted data, so no entity is cut."""
    if not 0.0 <= whole_fraction <= 1.0:
        raise ValueError(
            f"[bert_ner] context_mix: whole_fraction must be in [0, 1], not {whole_fraction}"
        )
    if max_sents < 1:
        raise ValueError(f"[bert_ner] context_mix: max_sents must be at least 1, not {max_sents}")

    lengths = list(range(1, max_sents + 1))
    weights = [1.0 / n for n in lengths]

    def augment(nlp: Language, example: Example) -> Iterator[Example]:
        reference = example.reference
        sents = _sentences(reference)
        if len(sents) < 2 or random.random() < whole_fraction:
            yield example
            return
        start = 0
        while start < len(sents):
            end = min(start + random.choices(lengths, weights)[0], len(sents))
            first, last = sents[start].start, sents[end - 1].end
            piece = reference[first:last].as_doc()
            slice_teacher_targets(reference, first, last, piece)
            # As spacy.Corpus makes its examples: the predicted side is tokenized from the text.
            yield Example(nlp.make_doc(piece.text), piece)
            start = end

    return augment


def _sentences(doc: Doc) -> List[Span]:
    if len(doc) == 0 or not doc.has_annotation("SENT_START"):
        return []
    return list(doc.sents)
