"""Tests of kmexplain_utils.evaluation.baselines: the Grad-CAM identity, LayerCAM, occlusion, randomisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kmexplain_utils.evaluation import baselines
from kmexplain_utils.scores import KMeansScoreModel
from kmexplain_utils.attribution import cam
from kmexplain_utils.chapters.models import TinyResNet


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    m = TinyResNet(n_classes=4, width=4).eval()
    nn.init.normal_(m.fc.bias, std=1.0)  # a visible bias: the identity must subtract it
    return m


def test_grad_cam_at_b4_is_relu_of_cam_minus_bias(model):
    """For encoder -> GAP -> linear, Grad-CAM(B4) = ReLU(CAM - b_c) / |P| exactly."""
    x = torch.rand(5, 3, 32, 32)
    t = torch.tensor([0, 1, 2, 3, 1])
    g = baselines.grad_cam(model, x, t, block="B4")
    c = cam(model, x, target=t)
    b = model.fc.bias.detach()[t][:, None, None]
    P = c.shape[-2] * c.shape[-1]
    torch.testing.assert_close(g, (c - b).clamp_min(0) / P, atol=1e-6, rtol=1e-5)
    assert not model.training


def test_grad_cam_matches_pytorch_grad_cam_on_a_full_resolution_layer():
    """An independent reference: the library's Grad-CAM, where its resize is the identity."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.rand(3, 3, 12, 12)
    t = torch.tensor([0, 2, 1])
    mine = baselines.grad_cam(net, x, t, layer=net[3])
    with GradCAM(model=net, target_layers=[net[3]]) as lib:
        ref = lib(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
    for i in range(3):
        m = mine[i].numpy()
        m = (m - m.min()) / max(m.max() - m.min(), 1e-12)
        np.testing.assert_allclose(m, ref[i], atol=1e-4)


def test_layercam_and_registered_resampling(model):
    x = torch.rand(2, 3, 32, 32)
    lc = baselines.grad_cam(model, x, 1, block="B3", kind="layercam")
    assert lc.shape == (2, 4, 4) and float(lc.min()) >= 0
    up = baselines.grad_cam(model, x, 1, block="B3", kind="layercam", size=32)
    assert up.shape == (2, 32, 32)
    # at a registered centre (stride 8, offset 0) the resampled map equals the grid value
    torch.testing.assert_close(up[:, 8, 16], lc[:, 1, 2])
    with pytest.raises(ValueError, match="kind"):
        baselines.grad_cam(model, x, 1, kind="scorecam")


def test_occlusion_finds_the_only_informative_patch():
    class Corner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = 20 * x[:, 0, :4, :4].mean((1, 2)) + 0 * self.w
            return torch.stack([s, -s], 1)

    x = torch.zeros(1, 3, 16, 16)
    x[:, 0, :4, :4] = 1.0
    m = baselines.occlusion(Corner(), x, 0, patch=4, stride=4,
                           score=lambda logits, t: logits.gather(1, t[:, None])[:, 0])
    assert m.shape == (1, 16, 16)
    assert float(m[0, :4, :4].min()) > 0.1 and float(m[0, 8:, 8:].abs().max()) < 1e-6


def test_kmeans_score_model_returns_the_classifier_scores(model):
    from kmexplain_utils.classifier import KMeansClassifier
    from kmexplain_utils.features import LevelFeatures

    x = torch.rand(24, 3, 32, 32)
    y = torch.arange(24) % 4
    lf = LevelFeatures("B34").fit(model, x)
    Z = lf.pooled(model, x)
    clf = KMeansClassifier(2, random_state=0, device="cpu").fit(Z, y)
    scorer = KMeansScoreModel(model, lf, clf)
    torch.testing.assert_close(scorer(x), torch.as_tensor(clf.class_scores(Z)))
    assert scorer(x).argmax(1).tolist() == torch.as_tensor(clf.predict(Z)).tolist()
