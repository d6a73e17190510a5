"""Exit 1 unless every ``name==version`` of a pins file is what is installed (the Colab-pins stage).

    python scripts/check_pins.py colab-pins.txt

Run by ``make test-colab`` after installing the package on top of Colab's versions: the install
must keep them (the Colab cell of every chapter installs the package into Colab's own
environment, and an upgrade there would mean the book is tested on versions Colab does not have).
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def pins(path: Path) -> dict[str, str]:
    """``{name: version}`` of the ``name==version`` lines (comments and blank lines skipped)."""
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", line)
        if not m:
            raise SystemExit(f"{path}: not a 'name==version' line: {raw!r}")
        out[m.group(1)] = m.group(2)
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "colab-pins.txt")
    wanted = pins(path)
    bad = []
    for name, want in wanted.items():
        try:
            got = version(name)
        except PackageNotFoundError:
            got = "not installed"
        # local build tags (torch 2.11.0+cu128) are the same release
        if got.split("+", 1)[0] != want:
            bad.append(f"{name}: {got} installed, {want} pinned")
    try:
        package = version("kmexplain-utils")
    except PackageNotFoundError:
        package = "not installed"
        bad.append("kmexplain-utils: not installed (install it on top of the pins first)")
    print(f"python {sys.version.split()[0]}; kmexplain-utils {package}; "
          + ", ".join(f"{n} {v}" for n, v in wanted.items()))
    if bad:
        print(f"{path}: the installed versions differ from the pins:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    print(f"{path}: all {len(wanted)} pins kept")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
