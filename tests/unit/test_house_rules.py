"""The house rules are enforced by the same commands everywhere: `make lint`, the pre-commit
hooks and CI (.ci/run), which lints before it tests."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def _lint_recipe() -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no lint target"
    return [line.strip() for line in recipe.group(1).splitlines()]


def _tool_and_action(command: str) -> str:
    """`$(BIN)/ruff check src workers tests` and `.venv/bin/ruff check` are both `ruff check`."""
    words = command.split()
    tool = words[0].rsplit("/", 1)[-1]
    action = [w for w in words[1:3] if w in ("check", "format", "--check")]
    return " ".join([tool, *action])


def test_pre_commit_runs_the_lint_targets_checks_from_the_venv_without_downloads() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    hooks = config["repos"][0]["hooks"]
    assert all(hook["entry"].startswith(".venv/bin/") for hook in hooks)
    assert sorted(_tool_and_action(hook["entry"]) for hook in hooks) == sorted(
        _tool_and_action(command) for command in _lint_recipe()
    )


def test_mypy_checks_the_same_packages_in_both() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (mypy,) = [hook["entry"] for hook in config["repos"][0]["hooks"] if "mypy" in hook["entry"]]
    (recipe,) = [command for command in _lint_recipe() if "mypy" in command]
    assert mypy.split()[1:] == recipe.split()[1:]


def test_ci_lints_before_it_tests() -> None:
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert steps.index("make lint") < steps.index("make test")
