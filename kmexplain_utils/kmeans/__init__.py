"""The k-means engine: :class:`KMeans` in PyTorch, and its benchmark.

The method (:mod:`kmexplain_utils.classifier`, :mod:`kmexplain_utils.concepts`)
fits every prototype and concept with this engine; the engine knows nothing of
the method (it imports only the package's private helpers).

============================  ==================================================================
module                        what
============================  ==================================================================
``estimator.py``              :class:`KMeans` (scikit-learn estimator; chunked matrix-product
                              distances, Hamerly's bounds on the CPU, streaming, distributed)
``_dist.py``, ``_bounds.py``  private: chunked distances, seeding, collectives; rounding-safe
                              distance bounds
``bench.py``                  ``python -m kmexplain_utils.kmeans.bench kmeans ...``: the engine
                              against scikit-learn and faiss
============================  ==================================================================

Example
-------
>>> import torch
>>> from kmexplain_utils.kmeans import KMeans
>>> X = torch.cat([torch.zeros(5, 2), torch.ones(5, 2)])
>>> sorted(KMeans(2, random_state=0).fit(X).cluster_centers_[:, 0].tolist())
[0.0, 1.0]
"""

from __future__ import annotations

from .estimator import INIT_SAMPLE_SIZE, POINTS_PER_CENTROID, KMeans, NotFittedError

__all__ = ["INIT_SAMPLE_SIZE", "POINTS_PER_CENTROID", "KMeans", "NotFittedError"]
