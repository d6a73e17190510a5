"""Attribution baselines of the evaluation: Grad-CAM / LayerCAM at any block, occlusion.

- :func:`grad_cam` -- Grad-CAM (Selvaraju et al., 2017) or LayerCAM (Jiang
  et al., 2021) at any block, resampled to the image at the block's
  registered centres. For a network encoder -> global average pooling ->
  linear, Grad-CAM at the last block B4 is exactly ``ReLU(CAM - b_c) / |P|``:
  the gradient of the logit ``l_c`` with respect to ``A`` is ``w_c / |P|`` at
  every position, so the channel weights are ``w_c / |P|`` and the map is
  ``ReLU(w_c . a_p) / |P|``. At B4 it is therefore *not* a second baseline
  beside CAM; at B3 (a finer grid, nearer B234's) it is.
- :func:`occlusion` -- a gradient-free peer (Zeiler and Fergus, 2014): the drop of
  the score when a square patch is replaced by a blurred copy of the image.

The k-means classifier as a model to score maps on (:class:`KMeansScoreModel`,
:func:`fit_temperature`) is part of the method: :mod:`kmexplain_utils.scores`.

The model-randomisation sanity check lives in :mod:`kmexplain_utils.evaluation.sanity`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._validation import check_rgb_images

__all__ = ["grad_cam", "occlusion"]


def _targets(target: Any, n: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"target must be an int or have shape (N,) = ({n},), got {tuple(t.shape)}")
    return t


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Any,
    *,
    block: str = "B4",
    layer: nn.Module | None = None,
    kind: str = "gradcam",
    size: Any = None,
    registration: str = "exact",
) -> torch.Tensor:
    """Grad-CAM or LayerCAM of the network's logit ``target`` at a block.

    Grad-CAM: ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of
    ``d l_c / d A_k``; LayerCAM: ``ReLU(sum_k ReLU(d l_c / d A_k) * A_k)``
    (position-wise weights). No normalisation is applied.

    Parameters
    ----------
    model : nn.Module
        The classifier: run in eval mode (every module's mode restored); no
        gradient is left on its parameters.
    x : torch.Tensor
        ``(N, 3, H, W)`` images.
    target : int or torch.Tensor
        Column of the logits explained (one for all or ``(N,)``).
    block : str, default "B4"
        Block whose output is differentiated (``"B3"`` for a finer grid).
    layer : nn.Module, optional
        Differentiate this module's output instead (``size`` then assumes offset 0).
    kind : {"gradcam", "layercam"}
    size : int or (int, int), optional
        Resample to this size at the block's registered centres (``registration``
        ``"exact"``, or ``"cell"`` for the first edition's convention).
    registration : {"exact", "cell"}

    Returns
    -------
    torch.Tensor
        ``(N, h, w)`` on the block's grid, or ``(N, H', W')`` resampled; detached.

    Example
    -------
    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    >>> grad_cam(m, torch.rand(2, 3, 64, 64), 1, block="B3", size=64).shape
    torch.Size([2, 64, 64])
    """
    from ..attribution import upsample_map
    from ..features import eval_mode, model_adapter, model_registration
    from ..resample import GridGeometry

    check_rgb_images(x)
    if kind not in ("gradcam", "layercam"):
        raise ValueError(f"kind must be 'gradcam' or 'layercam', got {kind!r}")
    module = layer if layer is not None else model_adapter(model).modules(model, [block])[block]
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        store["A"] = out

    handle = module.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.enable_grad():
            xx = x.detach().clone().requires_grad_(True)
            logits = model(xx)
            t = _targets(target, x.shape[0], logits.device)
            # the gradient with respect to the block's output only: no .grad is written on the parameters
            (G,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), store["A"])
            A, G = store["A"].detach(), G.detach()
    finally:
        handle.remove()
    if kind == "gradcam":
        m = (G.mean((2, 3), keepdim=True) * A).sum(1).clamp_min(0)
    else:
        m = (G.clamp_min(0) * A).sum(1).clamp_min(0)
    if size is None:
        return m
    geo = None
    if layer is None:
        reg = model_registration(model, tuple(x.shape[-2:]))[block]
        geo = GridGeometry.from_registration(reg, registration)
    return upsample_map(m, size, geo)


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: Any,
    *,
    patch: int | None = None,
    stride: int | None = None,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Occlusion maps: the drop of the target's score when a patch is blurred away.

    Every ``patch x patch`` square (moved by ``stride`` pixels) is replaced by
    the image blurred with a Gaussian of standard deviation ``max(H, W) / 16``
    (the deletion baseline of :func:`kmexplain_utils.evaluation.metrics.deletion_insertion`);
    a pixel's relevance is the mean score drop over the patches that cover it.
    Forward passes only: a gradient-free peer of the k-means maps.

    Parameters
    ----------
    model : nn.Module
        Images -> logits (or any class scores).
    x : torch.Tensor
        ``(N, 3, H, W)`` images in ``[0, 1]``.
    target : int or torch.Tensor
        Column explained (one for all or ``(N,)``).
    patch, stride : int, optional
        Default ``H // 4`` and ``patch // 2``.
    score : callable, optional
        ``score(logits, target) -> (B,)``; default the softmax probability.
    batch_size : int
        Occluded images per forward pass (whole images at a time, at least one).

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` float32 on the CPU.

    Example
    -------
    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    >>> occlusion(m, torch.rand(1, 3, 32, 32), 0, patch=8).shape
    torch.Size([1, 32, 32])
    """
    from ..features import eval_mode
    from .metrics import baseline_images

    check_rgb_images(x)
    n, _, H, W = x.shape
    patch = int(patch or max(1, H // 4))
    stride = int(stride or max(1, patch // 2))
    if score is None:
        def score(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return logits.softmax(1).gather(1, t[:, None])[:, 0]
    dev = next(model.parameters()).device
    tops = sorted({min(r, H - patch) for r in range(0, H - patch + stride, stride)})
    lefts = sorted({min(c, W - patch) for c in range(0, W - patch + stride, stride)})
    boxes = [(r, c) for r in tops for c in lefts]
    masks = torch.zeros(len(boxes), 1, H, W, dtype=torch.bool)
    for i, (r, c) in enumerate(boxes):
        masks[i, :, r:r + patch, c:c + patch] = True
    cover = masks.float().sum(0)[0]
    out = torch.zeros(n, H, W)
    base_all, _ = baseline_images(x, "blur")
    tgt = _targets(target, n, dev)
    per = max(1, int(batch_size) // len(boxes))  # images per forward pass, all their patches at once
    mk = masks.to(dev)
    with eval_mode(model), torch.no_grad():
        for s in range(0, n, per):
            xi, bi, t = x[s:s + per].to(dev), base_all[s:s + per].to(dev), tgt[s:s + per]
            m = xi.shape[0]
            s0 = score(model(xi), t)
            batch = torch.where(mk[None], bi[:, None], xi[:, None]).reshape(-1, *xi.shape[1:])
            drops = (s0[:, None] - score(model(batch), t.repeat_interleave(len(boxes))).view(m, -1)).float().cpu()
            out[s:s + m] = torch.einsum("mb,bhw->mhw", drops, masks[:, 0].float()) / cover.clamp_min(1)
    return out
