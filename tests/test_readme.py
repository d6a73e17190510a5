"""The README's "Use it on your own CNN" example runs as written (a doctest)."""

from __future__ import annotations

import doctest
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_own_cnn_example_runs() -> None:
    text = README.read_text()
    start = text.index("## Use it on your own CNN")
    section = text[start : text.index("\n## ", start + 1)]
    assert sum(line.startswith(">>>") for line in section.splitlines()) >= 5
    assert len([line for line in section.splitlines() if line.strip()]) <= 30  # short: the section stays short
    parser = doctest.DocTestParser()
    test = parser.get_doctest(section, {}, "README", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 5, (runner.failures, runner.tries)
