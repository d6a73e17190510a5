"""Run the README's "Use it on your own CNN" example against an installed wheel, not the checkout.

``make test-wheel`` runs this script with the interpreter of a clean virtual environment into which
it installed only the built wheel (and the pinned torch), from a temporary directory outside the
checkout, with ``PYTHONPATH`` unset. The script makes sure that what it tests is the installed
package:

- ``kmexplain_utils`` must be imported from the environment's ``site-packages`` (``sys.prefix``),
  never from a checkout (no ``pyproject.toml`` beside the package);
- its ``__version__`` must be the one given by ``--version`` (the version the wheel was built as);

and then runs the README section's ``>>>`` lines as a doctest, the way ``tests/test_readme.py``
does in the checkout. Exit code 0 when every example passes, 1 otherwise, with the reason.

Usage: python check_wheel.py README.md --version 0.2.0
"""

from __future__ import annotations

import argparse
import doctest
import sys
from pathlib import Path

SECTION = "## Use it on your own CNN"


def readme_section(readme: Path, heading: str = SECTION) -> str:
    """The text of one ``## `` section of the README (its heading included)."""
    text = readme.read_text(encoding="utf-8")
    if heading not in text:
        raise SystemExit(f"check_wheel: {readme} has no section {heading!r}")
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def check_installed(expected_version: str) -> Path:
    """The installed package's folder; exits when it is not the environment's own copy."""
    import kmexplain_utils

    where = Path(kmexplain_utils.__file__).resolve().parent
    prefix = Path(sys.prefix).resolve()
    if prefix not in where.parents:
        raise SystemExit(f"check_wheel: kmexplain_utils was imported from {where}, outside this environment "
                         f"({prefix}): the checkout, not the wheel, would be tested (unset PYTHONPATH, run "
                         "from a directory outside the checkout)")
    if (where.parent / "pyproject.toml").is_file():
        raise SystemExit(f"check_wheel: {where} sits beside a pyproject.toml: that is a checkout, not a wheel")
    if kmexplain_utils.__version__ != expected_version:
        raise SystemExit(f"check_wheel: the installed kmexplain_utils is version {kmexplain_utils.__version__}, "
                         f"the wheel was built as {expected_version}")
    return where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", type=Path)
    parser.add_argument("--version", required=True, help="the version the wheel was built as")
    args = parser.parse_args(argv)
    where = check_installed(args.version)
    print(f"check_wheel: kmexplain_utils {args.version} from {where}")
    section = readme_section(args.readme)
    test = doctest.DocTestParser().get_doctest(section, {}, "README", str(args.readme), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    if runner.tries < 5 or runner.failures:
        print(f"check_wheel: the README's example failed ({runner.failures} of {runner.tries} examples)")
        return 1
    print(f"check_wheel: the README's example passed ({runner.tries} examples) against the installed wheel")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
