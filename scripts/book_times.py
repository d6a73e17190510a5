#!/usr/bin/env python
"""Print how long each chapter took to execute in the last book build, and the total.

The times are myst-nb's own execution records (the ones the ``{nb-exec-table}`` of
``book/teaching.md`` shows), read from the Sphinx environment that ``jupyter-book build`` leaves
in ``<build>/.doctrees/environment.pickle``. A chapter that a later build did not re-read keeps
the record of the run that produced its page (its ``mtime`` says when that was).

Usage::

    python scripts/book_times.py [--build _build] [--budget 600] [--json times.json]

With ``--budget`` the script exits with status 1 when the recorded executions took longer in
total than the budget, in seconds (issue 17: at most 600 s of execution).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_exec_data(build: Path) -> list[dict]:
    """One record per notebook page: ``docname``, ``runtime`` (s), ``method``, ``succeeded``, ``mtime``.

    Raises
    ------
    SystemExit
        If there is no environment under ``build`` (build the book first) or it cannot be read.
    """
    env_file = build / ".doctrees" / "environment.pickle"
    if not env_file.is_file():
        raise SystemExit(f"book_times: {env_file} is missing: build the book first (make book)")
    try:
        with env_file.open("rb") as fh:
            env = pickle.load(fh)
    except Exception as err:  # a truncated or foreign pickle
        raise SystemExit(f"book_times: cannot read {env_file} ({err}); rebuild the book (make clean book)") from err
    rows = []
    for docname, meta in sorted(getattr(env, "nb_metadata", {}).items()):
        data = meta.get("exec_data")
        if not data:
            continue
        rows.append({
            "docname": docname,
            "runtime": float(data.get("runtime") or 0.0),
            "method": str(data.get("method", "")),
            "succeeded": bool(data.get("succeeded", False)),
            "mtime": float(data.get("mtime") or 0.0),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=ROOT / "_build")
    parser.add_argument("--budget", type=float, default=None, help="fail above this many seconds in total")
    parser.add_argument("--json", type=Path, default=None, help="also write the records to this file")
    args = parser.parse_args(argv)
    rows = read_exec_data(args.build)
    if not rows:
        print(f"book_times: no notebook execution recorded under {args.build}", file=sys.stderr)
        return 1
    newest = max(r["mtime"] for r in rows)
    width = max(len(r["docname"]) for r in rows)
    print(f"{'chapter':<{width}}  {'seconds':>8}  method")
    for r in rows:
        flag = "" if r["succeeded"] else "  FAILED"
        print(f"{r['docname']:<{width}}  {r['runtime']:8.1f}  {r['method']}{flag}")
    total = sum(r["runtime"] for r in rows)
    print(f"{'total':<{width}}  {total:8.1f}  ({len(rows)} notebooks; last executed at mtime {newest:.0f})")
    if args.json is not None:
        args.json.write_text(json.dumps({"total_seconds": total, "chapters": rows}, indent=1))
    if args.budget is not None and total > args.budget:
        print(f"book_times: {total:.0f} s of execution is over the budget of {args.budget:.0f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
