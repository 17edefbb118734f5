"""Entity-level scoring: exact-match precision, recall and F1, overall and per type."""

from typing import Any, Callable, Dict, Iterable

from spacy.scorer import get_ner_prf
from spacy.training import Example
from spacy.util import registry


def score_ents(examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
    """Score predicted `doc.ents` against the reference, conlleval-style: boundaries and type must
    both match. Returns `ents_p`, `ents_r`, `ents_f` and `ents_per_type`."""
    return get_ner_prf(examples, **kwargs)


@registry.scorers("spacy_bert_ner.ner_scorer.v1")
def make_ner_scorer() -> Callable[..., Dict[str, Any]]:
    return score_ents
