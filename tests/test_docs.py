"""The README stays true: every setting is in its table, and the two commands it gives exist."""

from __future__ import annotations

import re

from tests.conftest import ROOT
from worker.settings import Settings

README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [name for name in Settings.model_fields if f"`WORKER_{name.upper()}`" not in README]
    assert not missing, f"settings missing from the README table: {missing}"


def test_the_two_commands_are_make_targets_and_ci_runs_the_test_one() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("```", 2)[1]
    assert re.findall(r"^make (\w+)", quick_start, re.M) == ["run", "test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
