"""README.md's two set-up commands and .ci/run stay in step.

    pytest tests/test_readme_ci.py -q

CI runs `.ci/run`, which must run the README's test command (its second command) verbatim,
and the README's first command must point at files that exist.
"""

from __future__ import annotations

import re
import shlex

from conftest import REPO_ROOT


def readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md must open with a ```bash block of commands"
    assert text.index(block.group(0)) < 40, "the commands must be the README's first lines"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert len(commands) == 2
    test_command = commands[1]
    assert "pytest" in test_command and test_command.startswith("bash scripts/setup.sh")
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert test_command in ci_lines


def test_readme_demo_command_names_existing_files():
    demo_command = readme_commands()[0]
    words = shlex.split(demo_command.replace("&&", " "))
    assert "scripts/setup.sh" in words and (REPO_ROOT / "scripts" / "setup.sh").is_file()
    config = words[words.index("--config") + 1]
    assert (REPO_ROOT / config).is_file()
    assert "search" in words and "extract" in words
