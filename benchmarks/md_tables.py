"""Write a generated table into a Markdown page, between two marker comments."""

import re
from pathlib import Path

import typer


def replace_block(page_path: Path, start: str, end: str, text: str) -> None:
    """Replace what stands between the `start` and `end` markers of the page with `text`."""
    page = page_path.read_text(encoding="utf8")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(page):
        raise typer.BadParameter(f"{page_path} has no {start} ... {end} block")
    page_path.write_text(pattern.sub(lambda _: f"{start}\n{text}{end}", page), encoding="utf8")
