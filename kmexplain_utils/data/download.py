"""Hash-checked, atomic downloads with an error that says what to do by hand.

:func:`download_file` streams a URL to a temporary file next to the
destination, checks its SHA-256 or MD5, and only then renames it into place
(``os.replace``): an interrupted or corrupt download never leaves a file that
looks complete. When anything fails, :class:`DownloadError` names the URL,
the destination and the manual fallback.

Example
-------
>>> import pathlib, tempfile
>>> from kmexplain_utils.data.download import download_file
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = (tmp / "a.txt").write_text("hello")
>>> download_file((tmp / "a.txt").as_uri(), tmp / "b.txt").read_text()
'hello'
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["DownloadError", "download_file", "file_hash", "manual_download_message"]

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or gave a file with the wrong hash."""


def manual_download_message(urls: str | list[str], dest: str | os.PathLike, extra: str = "") -> str:
    """The sentence every download error ends with: where to get the file and where to put it."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    listed = ", ".join(urls)
    return f"Download it by hand from {listed} to {Path(dest)}{(' ' + extra) if extra else ''}, then run again."


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``"sha256"`` or ``"md5"``), read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _expected(sha256: str | None, md5: str | None) -> list[tuple[str, str]]:
    out = []
    if sha256:
        out.append(("sha256", sha256.strip().lower()))
    if md5:
        out.append(("md5", md5.strip().lower()))
    return out


def download_file(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    *,
    timeout: float = 60.0,
    overwrite: bool = False,
    opener: Callable[..., BinaryIO] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically and check its hash.

    Parameters
    ----------
    url : str
        Any URL :func:`urllib.request.urlopen` understands (``https://``,
        ``file://`` ...).
    dest : path
        Final location; its folder is created.
    sha256, md5 : str, optional
        Expected hex digests (checked when given).
    timeout : float, default 60
        Seconds before a stalled connection fails.
    overwrite : bool, default False
        Download even when ``dest`` exists. Otherwise an existing file is
        kept when it has the expected hash (or when no hash is given), and
        replaced when its hash is wrong.
    opener : callable, optional
        ``opener(url, timeout=...)`` returning a readable binary stream;
        default :func:`urllib.request.urlopen` (tests pass their own).

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        On a network error or a hash mismatch. The message names the URL, the
        destination and "download it by hand to <dest>"; no partial file is
        left behind.
    """
    dest = Path(dest).expanduser()
    checks = _expected(sha256, md5)
    if dest.exists() and not overwrite and all(file_hash(dest, alg) == want for alg, want in checks):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or urllib.request.urlopen
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    hashes = {alg: hashlib.new(alg) for alg, _ in checks}
    try:
        try:
            with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as src:
                total = _content_length(src)
                from ..config import progress

                with progress(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                    for block in iter(lambda: src.read(_CHUNK), b""):
                        out.write(block)
                        for h in hashes.values():
                            h.update(block)
                        bar.update(len(block))
                out.flush()
                os.fsync(out.fileno())
        except Exception as exc:
            raise DownloadError(
                f"Could not download {url} to {dest}: {type(exc).__name__}: {exc}. "
                + manual_download_message(url, dest)
            ) from exc
        for alg, want in checks:
            got = hashes[alg].hexdigest()
            if got != want:
                raise DownloadError(
                    f"The file downloaded from {url} has {alg} {got}, expected {want} "
                    f"(truncated or changed file); nothing was written to {dest}. "
                    + manual_download_message(url, dest, f"and check its {alg}")
                )
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _content_length(src: Any) -> int | None:
    try:
        value = src.headers.get("Content-Length") if getattr(src, "headers", None) is not None else None
        return int(value) if value else None
    except (TypeError, ValueError, AttributeError):
        return None
