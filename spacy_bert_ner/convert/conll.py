"""CoNLL-style columns (CoNLL-2003's 4, WNUT-17's 2) -> spaCy Docs, one at a time: IOB1 or IOB2
tags, detected as the file is read, -DOCSTART- documents grouped `n_sents` sentences per Doc."""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc

from .common import ConversionError, ConversionStats, check_label, describe_invisible, read_lines

CONLL_SCHEMES = ("auto", "iob1", "iob2")
DOCSTART = "-DOCSTART-"
# Column layouts by count: 2 = WNUT-17 (word tag), 4 = CoNLL-2003 (word POS chunk tag).
CONLL_LAYOUTS = {2: "word tag", 4: "word POS chunk tag"}
TAG_PATTERN = re.compile(r"^(O|[BI]-[^\s-](?:\S*[^\s-])?)$")


@dataclass
class Token:
    line: int
    word: str
    tag: str


Sentence = List[Token]


def _columns(line: str) -> List[str]:
    return line.split("\t") if "\t" in line else line.split()


def has_docstart(path: Path, source: Optional[Path] = None) -> bool:
    """Whether a CoNLL file marks documents (has a -DOCSTART- line), reading up to the first."""
    return any(
        (columns := _columns(line)) and columns[0] == DOCSTART
        for _, line in read_lines(path, source)
    )


def read_conll_sentences(path: Path, source: Optional[Path] = None) -> Iterator[Optional[Sentence]]:
    """The file's sentences (split at blank lines) of tokens, one at a time, and None for each
    -DOCSTART- line (a document boundary)."""
    sentence: Sentence = []
    n_columns = 0
    first_line = 0
    for number, line in read_lines(path, source):
        columns = _columns(line)
        if not columns or not line.strip():
            if sentence:
                yield sentence
                sentence = []
            continue
        if columns[0] == DOCSTART:
            if sentence:
                yield sentence
                sentence = []
            yield None
            continue
        if not n_columns:
            if len(columns) not in CONLL_LAYOUTS:
                layouts = " or ".join(f"{n} ({name})" for n, name in CONLL_LAYOUTS.items())
                raise ConversionError(
                    path,
                    number,
                    f"unknown column layout: {len(columns)} columns in {line!r}"
                    f"{describe_invisible(line)}; expected {layouts}, separated by spaces or tabs.",
                )
            n_columns, first_line = len(columns), number
        elif len(columns) != n_columns:
            raise ConversionError(
                path,
                number,
                f"malformed line: {len(columns)} columns, but line {first_line} has "
                f"{n_columns}: {line!r}{describe_invisible(line)}",
            )
        word, tag = columns[0].strip(), columns[-1].strip()
        if not word:
            raise ConversionError(
                path,
                number,
                f"empty word in the first column: {line!r}{describe_invisible(line)}; every "
                "token needs one.",
            )
        if not TAG_PATTERN.match(tag):
            raise ConversionError(
                path,
                number,
                f"invalid tag {tag!r} in {line!r}{describe_invisible(line)}: expected O, "
                "B-<label> or I-<label> (IOB1 or IOB2) in the last column.",
            )
        sentence.append(Token(number, word, tag))
    if sentence:
        yield sentence


def _stray_inside(sentence: Sentence) -> Iterator[Tuple[int, Token]]:
    """Tokens tagged I-X that do not continue a B-X/I-X: invalid in IOB2, entity starts in IOB1."""
    previous = "O"
    for i, token in enumerate(sentence):
        if token.tag.startswith("I-") and previous[2:] != token.tag[2:]:
            yield i, token
        previous = token.tag


def _b_after_other(sentence: Sentence) -> Iterator[Tuple[str, Token]]:
    """Tokens tagged B-X after O or another type, with the previous tag: invalid in IOB1."""
    previous = "O"
    for token in sentence:
        if token.tag.startswith("B-") and previous[2:] != token.tag[2:]:
            yield previous, token
        previous = token.tag


class SchemeDetector:
    """The tag scheme of a file read a sentence at a time: 'iob2' while every entity starts with
    B-; 'iob1' once an I- tag starts one, as long as B- only separates adjacent same-type
    entities; an error as soon as the file has both, naming the first of each.

    Until the first stray I- tag, IOB1 and IOB2 read the same, so the sentences before it are
    converted correctly whichever the file turns out to be."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stray: Optional[Token] = None
        self.b_after: Optional[Tuple[str, Token]] = None

    def check(self, sentence: Sentence) -> None:
        stray = next((token for _, token in _stray_inside(sentence)), None)
        b_after = next(_b_after_other(sentence), None)
        self.stray = self.stray or stray
        self.b_after = self.b_after or b_after
        if self.stray is not None and self.b_after is not None:
            previous, token = self.b_after
            raise ConversionError(
                self.path,
                token.line,
                f"{token.tag} starts an entity after {previous}, so the file is not IOB1, "
                f"but line {self.stray.line} has {self.stray.tag} starting an entity, so it is "
                "not IOB2 either. Pass --scheme iob2 --repair to turn stray I- tags into B-.",
            )

    @property
    def scheme(self) -> str:
        return "iob2" if self.stray is None else "iob1"


def normalize_tags(
    path: Path, sentence: Sentence, scheme: str, repair: bool, stats: ConversionStats
) -> List[str]:
    """The sentence's tags in IOB2, converting IOB1 or repairing stray I- tags (if allowed)."""
    tags = [token.tag for token in sentence]
    for i, token in _stray_inside(sentence):
        if scheme == "iob1":
            stats.converted["IOB1 entity starts (I- after O or another type) written as B-"] += 1
        elif repair:
            stats.repaired["stray I- tag changed to B-"] += 1
        else:
            raise ConversionError(
                path,
                token.line,
                f"{token.tag} does not continue an entity (previous tag: "
                f"{tags[i - 1] if i else 'sentence start'}), which is invalid in IOB2. If the "
                "file is IOB1 pass --scheme iob1; to change stray I- tags to B- pass --repair.",
            )
        tags[i] = "B-" + token.tag[2:]
    for token in sentence:
        if token.tag != "O":
            check_label(path, token.line, token.tag[2:], stats)
    return tags


def conll_to_docs(
    path: Path,
    nlp: Language,
    *,
    scheme: str = "auto",
    n_sents: int = 10,
    repair: bool = False,
    stats: Optional[ConversionStats] = None,
    source: Optional[Path] = None,
) -> Iterator[Doc]:
    """Docs from a CoNLL file: each holds up to `n_sents` consecutive sentences of one document
    (0 = the whole document), with sentence boundaries and entities set. Documents are marked by
    -DOCSTART- lines; in a file without any (tweets, single sentences), the sentences are
    unrelated, so each becomes its own doc whatever `n_sents` says (`stats.grouped` is False).
    The file is read a sentence at a time; only the sentences of one doc are held.

    scheme (str): "iob1", "iob2" or "auto" (detect from the tags, as they are read).
    repair (bool): Change IOB2 I- tags that start an entity to B- instead of failing.
    source (Path): Read this copy of `path` instead (messages name `path`).
    """
    if scheme not in CONLL_SCHEMES:
        raise ValueError(f"Unknown tag scheme {scheme!r}: use one of {', '.join(CONLL_SCHEMES)}.")
    stats = stats if stats is not None else ConversionStats()
    marked = has_docstart(path, source)
    stats.grouped = marked
    detector = SchemeDetector(path) if scheme == "auto" else None
    # Under "auto", stray I- tags are IOB1 entity starts unless the file proves otherwise, which
    # the detector raises at once.
    convert_as = "iob1" if detector is not None else scheme
    stats.scheme = scheme if detector is None else "iob2"
    group: List[Sentence] = []
    produced = False

    def make_doc() -> Doc:
        words = [token.word for sentence in group for token in sentence]
        tags = [tag for s in group for tag in normalize_tags(path, s, convert_as, repair, stats)]
        sent_starts: List[Union[bool, int, None]] = [
            j == 0 for sentence in group for j in range(len(sentence))
        ]
        doc = Doc(nlp.vocab, words=words, sent_starts=sent_starts, ents=tags)
        stats.add_doc(doc)
        return doc

    for sentence in read_conll_sentences(path, source):
        if sentence is not None:
            if detector is not None:
                detector.check(sentence)
                stats.scheme = detector.scheme
            group.append(sentence)
        full = sentence is None or not marked or (n_sents > 0 and len(group) >= n_sents)
        if full and group:
            yield make_doc()
            produced = True
            group = []
    if group:
        yield make_doc()
        produced = True
    if not produced:
        raise ConversionError(
            path, None, "no tokens: the file has only -DOCSTART- and blank lines."
        )
