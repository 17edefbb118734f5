"""Converted Docs -> `.spacy` output: one DocBin file, or a directory of shards (spaCy's `Corpus`
convention) written as they fill, so memory does not grow with the input; written completely
or not at all."""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc, DocBin

from .common import ConversionStats, readable
from .conll import CONLL_SCHEMES, conll_to_docs
from .jsonl import jsonl_to_docs

# Tokens per .spacy file of a directory output: a DocBin of 500,000 tokens takes ~60 MB, and about
# three times that while it is serialized.
SHARD_TOKENS = 500_000


def detect_format(path: Path) -> str:
    """'jsonl' for .jsonl/.json(.gz) files, else 'conll'."""
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    return "jsonl" if suffixes and suffixes[-1] in (".jsonl", ".json") else "conll"


def read_docs(
    input_path: Path,
    nlp: Language,
    *,
    file_format: str = "auto",
    scheme: str = "auto",
    n_sents: int = 10,
    repair: bool = False,
    stats: Optional[ConversionStats] = None,
) -> Iterator[Doc]:
    """The Docs of one annotated file (CoNLL or JSONL), made one at a time as it is read; a pipe
    or FIFO is copied to a temporary file first. Counts go to `stats`."""
    if n_sents < 0:
        raise ValueError(f"--n-sents must be 0 (whole documents) or more, not {n_sents}.")
    file_format = detect_format(input_path) if file_format == "auto" else file_format
    if file_format not in ("conll", "jsonl"):
        raise ValueError(f"Unknown format {file_format!r}: use auto, conll or jsonl.")
    if scheme not in CONLL_SCHEMES:
        raise ValueError(f"Unknown tag scheme {scheme!r}: use one of {', '.join(CONLL_SCHEMES)}.")
    stats = stats if stats is not None else ConversionStats()
    with readable(input_path) as source:
        if file_format == "conll":
            yield from conll_to_docs(
                input_path,
                nlp,
                scheme=scheme,
                n_sents=n_sents,
                repair=repair,
                stats=stats,
                source=source,
            )
        else:
            yield from jsonl_to_docs(input_path, nlp, repair=repair, stats=stats, source=source)


def convert(
    input_path: Path,
    nlp: Language,
    *,
    file_format: str = "auto",
    scheme: str = "auto",
    n_sents: int = 10,
    repair: bool = False,
) -> Tuple[DocBin, ConversionStats]:
    """Read one annotated file into a DocBin (in memory), with statistics of what was read.
    `convert_to_disk` writes big files in bounded memory."""
    stats = ConversionStats()
    docs = read_docs(
        input_path,
        nlp,
        file_format=file_format,
        scheme=scheme,
        n_sents=n_sents,
        repair=repair,
        stats=stats,
    )
    docbin = DocBin(store_user_data=False)
    for doc in docs:
        docbin.add(doc)
    return docbin, stats


def is_shard_directory(output_path: Path) -> bool:
    """Whether `convert_to_disk` writes `output_path` as a directory of .spacy shards (it has no
    suffix, or is a directory) rather than one .spacy file."""
    return output_path.is_dir() or not output_path.suffix


def check_output(output_path: Path) -> None:
    """Refuse, before any work, an output `convert_to_disk` would not write: a file without the
    .spacy suffix, or a directory holding anything but .spacy files (a previous conversion)."""
    if is_shard_directory(output_path):
        if output_path.is_dir():
            others = [p.name for p in output_path.iterdir() if p.suffix != ".spacy"]
            if others:
                raise ValueError(
                    f"{output_path}: the directory holds other files than .spacy shards "
                    f"({', '.join(sorted(others)[:3])}); spaCy's corpus reader would mix them "
                    "in. Choose a new or empty directory."
                )
        elif output_path.exists():
            raise ValueError(f"{output_path}: exists and is not a directory.")
    elif output_path.suffix != ".spacy":
        raise ValueError(
            f"{output_path}: the output needs the .spacy suffix (one DocBin file), or no suffix "
            "(a directory of .spacy shards), since spaCy's corpus reader (spacy train, "
            "spacy.Corpus) reads only .spacy files."
        )
    elif output_path.is_dir():
        raise ValueError(f"{output_path}: is a directory; a .spacy file output must be a file.")


def write_docs(
    docs: Iterable[Doc],
    output_path: Path,
    *,
    shard_tokens: int = SHARD_TOKENS,
    stats: Optional[ConversionStats] = None,
) -> int:
    """Write Docs to one .spacy file, or (a path without suffix, or a directory) to a directory of
    .spacy shards (00000.spacy, 00001.spacy, ...) of about `shard_tokens` tokens each, each
    written as soon as it is full, so that memory holds at most one shard. spaCy's `Corpus` (and
    `spacy train --paths.train DIR`) reads such a directory as one corpus.

    Nothing is in place until every doc is written: the output is written beside its path under
    a hidden name and moved there at the end (replacing a previous conversion's output), so a
    failure leaves no partial output. Returns the number of files written.
    """
    if shard_tokens < 1:
        raise ValueError(f"--shard-size must be 1 or more tokens, not {shard_tokens}.")
    check_output(output_path)
    sharded = is_shard_directory(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden (a leading dot): spaCy's corpus reader skips it, should it be left by a kill -9.
    temporary = Path(
        tempfile.mkdtemp(prefix=f".{output_path.name}.", suffix=".tmp", dir=output_path.parent)
    )
    files = 0
    try:
        docbin, tokens = DocBin(store_user_data=False), 0
        for doc in docs:
            docbin.add(doc)
            tokens += len(doc)
            if sharded and tokens >= shard_tokens:
                docbin.to_disk(temporary / f"{files:05d}.spacy")
                files += 1
                docbin, tokens = DocBin(store_user_data=False), 0
        if len(docbin) or not files:
            name = f"{files:05d}.spacy" if sharded else "output.spacy"
            docbin.to_disk(temporary / name)
            files += 1
        del docbin
        if sharded:
            _replace_directory(temporary, output_path)
        else:
            os.replace(temporary / "output.spacy", output_path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    if stats is not None:
        stats.files = files
    return files


def _replace_directory(new: Path, output_path: Path) -> None:
    """Move the directory `new` to `output_path`, replacing a previous output there."""
    if not output_path.exists():
        os.rename(new, output_path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output_path.name}.", suffix=".old", dir=new.parent))
    try:
        os.rename(output_path, old / "previous")
        os.rename(new, output_path)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def convert_to_disk(
    input_path: Path,
    output_path: Path,
    nlp: Language,
    *,
    file_format: str = "auto",
    scheme: str = "auto",
    n_sents: int = 10,
    repair: bool = False,
    shard_tokens: int = SHARD_TOKENS,
) -> ConversionStats:
    """Convert one annotated file to a .spacy file, or to a directory of .spacy shards
    (`write_docs`): read, converted and written a doc at a time, so that with a directory output
    memory does not grow with the input (one .spacy file holds all its docs in memory until it is
    written)."""
    stats = ConversionStats()
    docs = read_docs(
        input_path,
        nlp,
        file_format=file_format,
        scheme=scheme,
        n_sents=n_sents,
        repair=repair,
        stats=stats,
    )
    write_docs(docs, output_path, shard_tokens=shard_tokens, stats=stats)
    return stats
