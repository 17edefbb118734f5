"""The README's commands run as written."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
