"""A small synthetic NER data set (PER, ORG, LOC; multi-token entities) and a vocabulary for it."""

import random
from typing import List, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.vocab import Vocab

ENTITIES = {
    "PER": ["john smith", "mary jones", "ahmed khan", "li wei", "anna maria lopez", "peter"],
    "ORG": ["acme corp", "the united nations", "red cross", "google", "bank of china"],
    "LOC": ["paris", "new york", "south africa", "berlin", "rio de janeiro"],
}
TEMPLATES = [
    "{PER} works for {ORG} in {LOC} .",
    "{ORG} opened an office in {LOC} .",
    "yesterday {PER} visited {LOC} with {PER} .",
    "{PER} said {ORG} will grow .",
    "in {LOC} , {ORG} hired {PER} .",
    "the weather was fine and nothing happened .",
]
FILLER = "the a of and in with for was fine nothing happened yesterday said will grow opened an"
FILLER += " office hired visited works , . today report shows"

# (words, [(start_token, end_token, label)])
Sentence = Tuple[List[str], List[Tuple[int, int, str]]]


def make_doc(n_sents: int, sent_len: int = 4) -> Doc:
    """A document of n_sents sentences of sent_len tokens (sentence boundaries set); each
    sentence's first token is a one-token PER."""
    words, starts, ents = [], [], []
    for i in range(n_sents):
        words += [f"Name{i}"] + [f"w{i}_{j}" for j in range(1, sent_len - 1)] + ["."]
        starts += [True] + [False] * (sent_len - 1)
        ents += ["B-PER"] + ["O"] * (sent_len - 1)
    return Doc(Vocab(), words=words, sent_starts=starts, ents=ents)


def make_sentences(n: int, seed: int) -> List[Sentence]:
    """n sentences filled from the templates with random entities."""
    rng = random.Random(seed)
    sentences: List[Sentence] = []
    for _ in range(n):
        words: List[str] = []
        spans: List[Tuple[int, int, str]] = []
        for part in rng.choice(TEMPLATES).split():
            if part.startswith("{"):
                label = part.strip("{}")
                entity = rng.choice(ENTITIES[label]).split()
                spans.append((len(words), len(words) + len(entity), label))
                words.extend(entity)
            else:
                words.append(part)
        sentences.append((words, spans))
    return sentences


def make_examples(nlp: Language, n: int, seed: int) -> List[Example]:
    """Examples whose reference docs carry the synthetic entities."""
    examples = []
    for words, spans in make_sentences(n, seed):
        reference = Doc(nlp.vocab, words=words)
        reference.ents = [Span(reference, s, e, label=label) for s, e, label in spans]
        examples.append(Example(nlp.make_doc(reference.text), reference))
    return examples


def to_conll(sentences: List[Sentence]) -> str:
    """The sentences as a 4-column CoNLL-2003 file with one -DOCSTART- document."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for words, spans in sentences:
        tags = ["O"] * len(words)
        for start, end, label in spans:
            tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 1)
        lines.extend(f"{word} NN O {tag}" for word, tag in zip(words, tags))
        lines.append("")
    return "\n".join(lines) + "\n"


def vocabulary() -> List[str]:
    """Word pieces for a tiny BERT: specials, characters, and every word of the data set."""
    words = {w for names in ENTITIES.values() for name in names for w in name.split()}
    words |= set(FILLER.split())
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return specials + chars + [f"##{c}" for c in chars] + sorted(words - set(chars))
