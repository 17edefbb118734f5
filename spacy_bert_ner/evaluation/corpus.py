"""Running a pipeline over a gold corpus: reading the gold Docs, and predicting on their words."""

from pathlib import Path
from typing import Iterable, List, Optional

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin

from ..convert import convert


def read_gold_docs(
    path: Path, nlp: Language, n_sents: int, *, scheme: str = "auto", repair: bool = False
) -> List[Doc]:
    """Gold Docs from a DocBin, or from any file `convert` reads (with its --scheme and --repair,
    which its messages suggest)."""
    if path.suffix == ".spacy":
        try:
            return list(DocBin().from_disk(path).get_docs(nlp.vocab))
        except Exception as err:
            raise ValueError(f"{path}: not a readable spaCy DocBin ({err}).") from None
    docbin, _ = convert(
        path, spacy.blank(nlp.vocab.lang), n_sents=n_sents, scheme=scheme, repair=repair
    )
    return list(docbin.get_docs(nlp.vocab))


def predict_corpus(
    nlp: Language, gold_docs: Iterable[Doc], batch_size: Optional[int] = None
) -> List[Doc]:
    """Run a pipeline over the words of gold Docs (their tokenization, none of their entities),
    so that its predictions line up token for token with the gold entities."""
    unannotated = (
        Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
        for doc in gold_docs
    )
    return list(nlp.pipe(unannotated, batch_size=batch_size))
