"""The installable pipeline: what `python -m spacy_bert_ner package` writes under `packages/`.

`spacy package` builds a pipeline package whose requirements name every package that registers a
function its config uses; for this pipeline that includes `spacy-bert-ner`, which no public package
index holds. Such a requirement cannot be installed on another machine, and whoever registered the
name on the public index would be installed by every `pip install` of the pipeline. So the pipeline
ships with the component's code beside it instead:

- `dist/spacy_bert_ner-<version>-py3-none-any.whl`: this package, built from its source;
- `dist/<lang>_<name>-<version>-py3-none-any.whl` (and its sdist): the pipeline, built by spaCy's
  own `package` (its `--code` convention for custom code), requiring only packages of the public
  index. Its small code module `bert_ner_code.py` imports `spacy_bert_ner` when the pipeline is
  loaded, with a message naming the wheel to install when it is missing, and a warning when the
  installed version is another than the one the pipeline was trained with.

`pip install <dist>/*.whl` installs both, with their dependencies from the public index. Where
spacy-bert-ner is installed already, the pipeline uses that installation: one copy of the code,
registered once.
"""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

import srsly
from spacy.cli.package import package as spacy_package

from .. import __version__

DISTRIBUTION = "spacy-bert-ner"
CODE_MODULE = "bert_ner_code"
CODE_TEMPLATE = '''"""The code of this pipeline's `bert_ner` component: the spacy-bert-ner
package, imported here so that its functions are registered before spaCy builds the pipeline."""

import warnings

PACKAGE_VERSION = {version!r}
WHEEL = {wheel!r}

try:
    import spacy_bert_ner
except ImportError as err:
    raise ImportError(
        f"This pipeline needs spacy-bert-ner {{PACKAGE_VERSION}}, which is not installed: "
        f"install {{WHEEL}}, built beside the pipeline's wheel (pip install both wheels in one "
        "command)."
    ) from err

if spacy_bert_ner.__version__ != PACKAGE_VERSION:
    warnings.warn(
        f"This pipeline was packaged with spacy-bert-ner {{PACKAGE_VERSION}}, but "
        f"{{spacy_bert_ner.__version__}} is installed: install {{WHEEL}} if its predictions "
        "differ from the model card's scores.",
        stacklevel=2,
    )
'''


class PackagingError(Exception):
    """A pipeline that cannot be packaged, with the reason and what to do."""


def code_wheel_name(version: str = __version__) -> str:
    return f"{DISTRIBUTION.replace('-', '_')}-{version}-py3-none-any.whl"


def source_tree() -> Path:
    """The source tree this package runs from (its pyproject.toml beside the package)."""
    root = Path(__file__).resolve().parents[2]  # spacy_bert_ner/workflow/packaging.py
    if not (root / "pyproject.toml").is_file():
        raise PackagingError(
            f"spacy_bert_ner is installed in {root}, not run from its source tree, so its wheel "
            "cannot be built beside the pipeline: install it from its source (pip install -e "
            "<the spacy-bert-ner repository>)."
        )
    return root


def build(source: Path, dist: Path, formats: List[str]) -> None:
    """Build `source` (a directory with pyproject.toml or setup.py) into `dist`, with the build
    tools of this environment (no download: the workflow extra installs them)."""
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist)]
    command += [f"--{fmt}" for fmt in formats] + [str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise PackagingError(
            f"Building {source} failed:\n{(result.stdout + result.stderr)[-3000:]}"
        )


def package_pipeline(
    model_path: Path, output_dir: Path, meta_path: Path, *, name: str, version: str
) -> List[Path]:
    """Package the trained pipeline at `model_path` with `meta_path` as its meta.json, under
    `output_dir/<lang>_<name>-<version>/`; returns the wheels to install, the code's and the
    pipeline's, both in that directory's `dist/`."""
    source = source_tree()
    output_dir.mkdir(parents=True, exist_ok=True)
    meta = srsly.read_json(meta_path)
    package_name = name if name.startswith(f"{meta['lang']}_") else f"{meta['lang']}_{name}"
    main_path = output_dir / f"{package_name}-{version}"
    dist = main_path / "dist"
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / f"{CODE_MODULE}.py"
        code.write_text(
            CODE_TEMPLATE.format(version=__version__, wheel=code_wheel_name()), encoding="utf8"
        )
        spacy_package(
            model_path,
            output_dir,
            meta_path=meta_path,
            code_paths=[code],
            name=name,
            version=version,
            create_sdist=False,
            create_wheel=False,
            force=True,
            silent=False,
        )
    packaged_meta = srsly.read_json(main_path / "meta.json")
    packaged_meta["requirements"] = [
        req
        for req in packaged_meta.get("requirements", [])
        if re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() != DISTRIBUTION
    ]
    srsly.write_json(main_path / "meta.json", packaged_meta)
    for old in dist.glob("*"):  # only this build's files
        old.unlink()
    build(main_path, dist, ["sdist", "wheel"])
    with tempfile.TemporaryDirectory() as tmp:
        # A copy, so that the build leaves no build/ or egg-info in the source tree.
        copy = Path(tmp)
        shutil.copytree(
            source / "spacy_bert_ner",
            copy / "spacy_bert_ner",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(source / name, copy / name)
        build(copy, dist, ["wheel"])
    pipeline_wheels = [p for p in dist.glob("*.whl") if p.name != code_wheel_name()]
    return [dist / code_wheel_name(), *pipeline_wheels]
