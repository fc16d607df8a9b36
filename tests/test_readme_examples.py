"""The README's runnable examples run as they stand."""

from __future__ import annotations

import re

from tests.conftest import ROOT

MARKER = "<!-- runnable: tests/test_readme_examples.py runs this block -->"


def runnable_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(re.escape(MARKER) + r"\n```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_own_training_loop_example_trains_with_esam_and_evaluates_the_slow_weights(capsys):
    (block,) = runnable_blocks()
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["accuracy"] >= 0.9
    assert "training accuracy of the slow weights" in capsys.readouterr().out
