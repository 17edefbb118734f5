"""The README's Architecture section names every module of the package, and only those."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def architecture_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    return readme.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]


def test_architecture_names_every_module():
    package = ROOT / "spacy_bert_ner"
    modules = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    section = architecture_section()
    named = set(re.findall(r"`([\w/]+\.py)`", section))
    # Modules of the evaluation/ package are named without their folder.
    resolved = {name if name in modules else f"evaluation/{name}" for name in named}
    assert modules - resolved == set(), "modules missing from the README's Architecture section"
    assert resolved - modules == set(), "the Architecture section names modules that do not exist"


def test_readme_project_commands_parse():
    """Every `spacy project run` command the README shows runs as written (with `--dry`, which
    prints the steps without running them): weasel reads a `--vars.*` written straight after the
    command's name as the project directory and stops."""
    import shlex
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text(encoding="utf8")
    commands = set(re.findall(r"python -m spacy project run [^`\n#]*--vars[^`\n#]*", readme))
    assert len(commands) >= 4
    for command in sorted(commands):
        args = shlex.split(command)[1:] + ["--dry"]
        out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, f"{command}\n{out.stdout[-500:]}{out.stderr[-500:]}"
        assert "Running command" in out.stdout, command
