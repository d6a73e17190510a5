"""The one prototype-score formula against brute-force squared distances."""

from __future__ import annotations

import pytest
import torch

from kmexplain_utils.scores import prototype_scores


def test_scores_are_negative_squared_distances_up_to_the_norm_of_a() -> None:
    g = torch.Generator().manual_seed(0)
    z, mu = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)
    brute = -torch.cdist(z, mu).pow(2) + z.pow(2).sum(1, keepdim=True)
    assert torch.allclose(prototype_scores(z, mu), brute)
    A = torch.randn(2, 5, 4, 3, generator=g, dtype=torch.float64)
    per_pos = prototype_scores(A, mu)
    a = A.permute(0, 2, 3, 1)  # (N, H, W, D)
    brute_pos = -((a[:, None] - mu[None, :, None, None]) ** 2).sum(-1) + (a ** 2).sum(-1)[:, None]
    assert torch.allclose(per_pos, brute_pos)
    paired = prototype_scores(A, mu[[0, 2]], paired=True)
    assert torch.allclose(paired, torch.stack([per_pos[0, 0], per_pos[1, 2]]))
    assert torch.allclose(prototype_scores(A.mean((2, 3)), mu[[0, 2]], paired=True), paired.mean((1, 2)))


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, D\) embeddings or \(N, D, H, W\) maps"):
        prototype_scores(torch.rand(3, 4, 5), torch.rand(2, 4))
    with pytest.raises(ValueError, match="prototypes must be"):
        prototype_scores(torch.rand(3, 4), torch.rand(2, 5))
    with pytest.raises(ValueError, match="one prototype per row"):
        prototype_scores(torch.rand(3, 4), torch.rand(2, 4), paired=True)
