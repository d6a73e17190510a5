"""kmexplain_utils: post-hoc self-explanation of CNNs with k-means.

The package behind the *kmexplain* book. Importing it is cheap and has no
side effects (no network, no file writes, no warning filters, no plotting
style): sub-modules are loaded on first use.

Layout (``DESIGN.md`` has the rules: what each layer may import)
-----------------------------------------------------------------
- the modules at the top are **the method** (``explainer``, ``sem``,
  ``architectures``, ``receptive_field``, ``resample``, ``features``,
  ``scores``, ``classifier``, ``concepts``, ``attribution``, ``prototypes``),
  with its figures (``plotting``), the settings every layer reads
  (``config``) and private helpers (``_validation``, ``_torch``, ``_sklearn``);
- ``kmeans/`` -- the k-means engine and its benchmark;
- ``data/`` -- the book's data sets;
- ``chapters/`` -- the book's machinery (models, the pretrained loader,
  training, checkpoints, notebook helpers, widgets);
- ``evaluation/`` -- the quantitative evaluation and its command line.

The names below are the method's API.

Main entry points
-----------------
- :class:`Explainer` -- the front door: fit on training images, then explain.
- :func:`registration` -- where each block's positions sit on the image.
- :func:`decompose_logits` -- a CNN is a self-explainable model (METHOD 1).
- :class:`KMeans` -- a fast k-means in PyTorch.
- :class:`KMeansClassifier` -- per-class k-means head (METHOD 2).
- :func:`block_features`, :class:`LevelFeatures` -- B4, B34, B234 ... (METHOD 3).
- :func:`concept_map`, :func:`attribution_map` -- explanations (METHOD 4-5).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"  # the one place of the version (pyproject.toml reads it; CHANGELOG.md, CITATION.cff follow)

# public name -> sub-module that defines it (loaded lazily)
_LAZY: dict[str, str] = {
    "resolve_device": "config",
    "Explainer": "explainer",
    "Explanation": "explainer",
    "adapt": "architectures",
    "registration": "architectures",
    "receptive_field_centres": "receptive_field",
    "GridGeometry": "resample",
    "KMeans": "kmeans",
    "decompose_logits": "sem",
    "find_gap_linear_head": "sem",
    "block_features": "features",
    "LevelFeatures": "features",
    "KMeansClassifier": "classifier",
    "ConceptModel": "concepts",
    "concept_map": "concepts",
    "attribution_map": "attribution",
    "explain": "attribution",
    "contrastive_map": "attribution",
    "concept_contributions": "attribution",
    "cam": "attribution",
    "extract_pooled": "features",
    "sample_positions": "features",
    "parse_level": "features",
    "nearest_images": "prototypes",
    "prototype_representativeness": "prototypes",
    "linear_prototypes": "sem",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kmexplain_utils' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
