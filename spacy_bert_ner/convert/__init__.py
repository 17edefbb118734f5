"""Annotated data -> spaCy Docs: CoNLL-2003-style columns and JSONL span annotations.

`spacy convert` reads neither CoNLL-2003's `-DOCSTART- -X- -X- O` separators nor IOB1 reliably, and
validates little; these readers check every line, name the file and line of any problem, and only
repair data when asked to (counting each repair), so nothing is dropped or changed silently.

Input is read a line at a time and Docs are made one at a time (`read_docs`), so `convert_to_disk`
runs in memory that does not grow with the input: into a directory of `.spacy` shards, spaCy's
`Corpus` convention, each written when it holds `shard_tokens` tokens.

One module per concern: `common` (errors, statistics, label checks, reading lines), `conll` and
`jsonl` (the two formats), `docbin` (the `.spacy` output).
"""

from .common import ConversionError, ConversionStats, read_lines
from .conll import conll_to_docs
from .docbin import (
    SHARD_TOKENS,
    check_output,
    convert,
    convert_to_disk,
    read_docs,
    write_docs,
)
from .jsonl import jsonl_to_docs

__all__ = [
    "SHARD_TOKENS",
    "ConversionError",
    "ConversionStats",
    "check_output",
    "conll_to_docs",
    "convert",
    "convert_to_disk",
    "jsonl_to_docs",
    "read_docs",
    "read_lines",
    "write_docs",
]
