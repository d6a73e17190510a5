"""Shared test set-up: quiet progress bars, a private cache, CPU only."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("KMEX_PROGRESS", "0")
os.environ.setdefault("KMEX_PROFILE", "smoke")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Each test session writes checkpoints and features to a temporary cache."""
    cache = tmp_path_factory.getbasetemp() / "kmex_cache"
    monkeypatch.setenv("KMEX_CACHE", str(cache))
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "student_site: needs the student site (make book-student)")
