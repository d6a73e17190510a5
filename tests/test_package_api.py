"""The package's lazy top-level API resolves to the real objects."""

from __future__ import annotations

import importlib

import pytest

import kmexplain_utils


@pytest.mark.parametrize("name", [n for n in kmexplain_utils.__all__ if n != "__version__"])
def test_every_public_name_resolves_to_its_module(name):
    module = importlib.import_module(f"kmexplain_utils.{kmexplain_utils._LAZY[name]}")
    assert getattr(kmexplain_utils, name) is getattr(module, name)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        kmexplain_utils.nope  # noqa: B018


def test_version_matches_metadata():
    from importlib.metadata import version

    assert kmexplain_utils.__version__ == version("kmexplain-utils")
