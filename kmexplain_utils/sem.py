"""A CNN is a self-explainable model: the exact decomposition of its logits (METHOD 1).

A network of the form *encoder -> global average pooling -> (dropout) ->
linear* computes, for every class ``c``,

.. math:: l_c(x) = \\frac{1}{|P|} \\sum_p s_c(a_p), \\qquad s_c(a) = w_c \\cdot a + b_c,

where ``a_p`` is the encoder's last feature map at position ``p``. The rows
``w_c`` of the linear layer are the "prototypes", the affine dot product is
the similarity and the spatial mean is the aggregation. The map
``p -> s_c(a_p)`` is the class activation map (CAM).

This module finds the pieces of that form in common models
(:func:`find_gap_linear_head`), captures the last feature maps with a hook
that is always removed (:func:`last_feature_maps`), and computes the
per-position class scores (:func:`decompose_logits`).

Example
-------
>>> import torch, torchvision
>>> from kmexplain_utils.sem import decompose_logits, find_gap_linear_head, last_feature_maps
>>> model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
>>> x = torch.rand(2, 3, 64, 64)
>>> maps, logits = last_feature_maps(model, x, return_logits=True)
>>> s = decompose_logits(maps, find_gap_linear_head(model).linear)
>>> s.shape
torch.Size([2, 3, 2, 2])
>>> bool(torch.allclose(s.mean((2, 3)), logits, atol=1e-4))
True
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ._torch import eval_mode
from ._validation import check_tensor

__all__ = [
    "GapHead",
    "UnsupportedModelError",
    "find_gap_linear_head",
    "find_network",
    "capture_feature_maps",
    "last_feature_maps",
    "decompose_logits",
    "logit_maps",
    "linear_prototypes",
]

_REQUIRED = (
    "required: encoder -> global average pooling (output size 1x1) -> optional Dropout -> "
    "one nn.Linear"
)


class UnsupportedModelError(ValueError):
    """The model does not end in global average pooling + (dropout) + one linear layer."""


@dataclasses.dataclass(frozen=True)
class GapHead:
    """The parts of a model ``encoder -> global average pool -> (dropout) -> linear``.

    Attributes
    ----------
    architecture : str
        Which adapter recognised the model (``"ResNet"``, ``"DenseNet"``,
        ``"EfficientNet"``, ``"MobileNetV2"``, ``"features+classifier"``).
    feature_module : nn.Module
        The module whose output (after ``post``) is the last feature map
        ``(N, D, H, W)``; a forward hook on it captures the maps.
    feature_module_name : str
        Its qualified name inside the model (e.g. ``"layer4"``, ``"features"``).
    post : callable or None
        Function applied to the hooked output to obtain the maps that are
        pooled, e.g. the ReLU that DenseNet applies after ``features``.
    pool : str
        How the maps are pooled, in words (always a global average).
    dropout : nn.Module or None
        The dropout between pooling and the linear layer (identity in eval mode).
    linear : nn.Linear
        The final linear layer: weight ``(C, D)``, bias ``(C,)``.
    """

    architecture: str
    feature_module: nn.Module
    feature_module_name: str
    post: Callable[[torch.Tensor], torch.Tensor] | None
    pool: str
    dropout: nn.Module | None
    linear: nn.Linear

    @property
    def n_classes(self) -> int:
        """Number of classes ``C``."""
        return self.linear.out_features

    @property
    def n_features(self) -> int:
        """Number of channels ``D`` of the last feature map."""
        return self.linear.in_features


def _describe(module: nn.Module | None) -> str:
    if module is None:
        return "nothing"
    if isinstance(module, nn.Sequential):
        return "Sequential(" + ", ".join(type(m).__name__ for m in module) + ")"
    return repr(module) if len(repr(module)) < 80 else type(module).__name__


def _split_classifier(classifier: nn.Module, *, arch: str, where: str) -> tuple[nn.Module | None, nn.Linear]:
    """Return ``(dropout, linear)`` of a head that is Linear or Sequential(Dropout*, Linear)."""
    if isinstance(classifier, nn.Linear):
        return None, classifier
    if isinstance(classifier, nn.Sequential):
        mods = list(classifier)
        harmless = (nn.Dropout, nn.Identity, nn.Flatten)
        if mods and isinstance(mods[-1], nn.Linear) and all(isinstance(m, harmless) for m in mods[:-1]):
            drops = [m for m in mods[:-1] if isinstance(m, nn.Dropout)]
            return (drops[0] if drops else None), mods[-1]
    raise UnsupportedModelError(
        f"{arch}: the head {where} is {_describe(classifier)}, which is not a single linear layer; "
        f"{_REQUIRED}. An MLP head is not an average of per-position scores, so the logits cannot "
        "be decomposed exactly; replace the head by one nn.Linear (or use the k-means classifier "
        "on pooled features)."
    )


def _check_global_pool(pool: nn.Module | None, *, arch: str, where: str) -> str:
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        size = pool.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if all(s == 1 for s in size):
            return f"{where} = AdaptiveAvgPool2d(1)"
    raise UnsupportedModelError(
        f"{arch}: the pooling {where} is {_describe(pool)}, not a global average pooling; {_REQUIRED}."
    )


def find_gap_linear_head(model: nn.Module) -> GapHead:
    """Find the last feature maps, the pooling, the dropout and the linear layer of a model.

    Supported: torchvision ``ResNet`` (and any model with ``layer4``,
    ``avgpool``, ``fc``, such as the project's ``TinyResNet``), ``DenseNet``
    (its ``features`` are followed by a ReLU, which belongs to the feature
    maps), ``EfficientNet``, ``MobileNetV2``, and generic models with
    ``features``, a global ``avgpool`` and a linear ``classifier``; and any
    of these inside a wrapper (:func:`find_network`: a normalisation module
    holding the network, ``nn.Sequential(normalize, net)``,
    ``nn.DataParallel(net)``), with qualified names in the wrapper.

    Parameters
    ----------
    model : nn.Module
        The classifier.

    Returns
    -------
    GapHead

    Raises
    ------
    UnsupportedModelError
        If the model does not end in global average pooling + (dropout) +
        one ``nn.Linear`` (e.g. VGG's MLP classifier, MobileNetV3's MLP
        head); the message names what was found and what is required.

    Example
    -------
    >>> import torchvision
    >>> head = find_gap_linear_head(torchvision.models.densenet121(weights=None, num_classes=4))
    >>> head.architecture, head.feature_module_name, head.linear.in_features
    ('DenseNet', 'features', 1024)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    prefix, net = find_network(model)
    head = _direct_head(net)
    if prefix:
        head = dataclasses.replace(head, feature_module_name=f"{prefix}.{head.feature_module_name}")
    return head


def _wrapped(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The one child a wrapper runs the network through (``None``: not a wrapper)."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return "module", model.module
    with_params = [(n, m) for n, m in model.named_children() if any(True for _ in m.parameters())]
    return with_params[0] if len(with_params) == 1 else None


def find_network(model: nn.Module) -> tuple[str, nn.Module]:
    """The supported network inside ``model``, and its qualified name (``""``: the model itself).

    A user often holds the network inside a module: a normalisation wrapper
    (``class Normalised(nn.Module)`` with the network as ``.net``),
    ``nn.Sequential(normalize, net)``, ``nn.DataParallel(net)``. When
    ``model`` is not itself read by :func:`find_gap_linear_head`, its only
    child that has parameters (``DataParallel``'s ``.module``) is searched, and
    so on down. That the wrapper's output is the network's logits is checked
    by :func:`kmexplain_utils.architectures.adapt` (a wrapper that changes the
    logits, e.g. a softmax in ``forward``, fails its identity check).

    Returns
    -------
    prefix : str
        Qualified name of the network in ``model`` (``"net"``, ``"1"``,
        ``"module"``, ``"module.net"`` ...), ``""`` for ``model`` itself.
    network : nn.Module

    Raises
    ------
    UnsupportedModelError
        When neither ``model`` nor a network it wraps is supported (the message
        says what is wrapped and why it is not supported).

    Example
    -------
    >>> import torchvision
    >>> net = torchvision.models.resnet18(weights=None)
    >>> find_network(nn.Sequential(torchvision.transforms.Normalize([0.5] * 3, [0.2] * 3), net))[0]
    '1'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        _direct_head(model)
        return "", model
    except UnsupportedModelError:
        inner = _wrapped(model)
        if inner is None:
            raise
    name, sub = inner
    try:
        prefix, net = find_network(sub)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"{type(model).__name__} wraps {name!r} ({type(sub).__name__}), which is not "
                                    f"supported: {e}") from None
    return (f"{name}.{prefix}" if prefix else name), net


def _direct_head(model: nn.Module) -> GapHead:
    """:func:`find_gap_linear_head` of ``model`` itself (no wrapper)."""
    from torchvision import models as tvm

    name = type(model).__name__
    if isinstance(model, tvm.DenseNet):
        dropout, linear = _split_classifier(model.classifier, arch=name, where="'classifier'")
        return GapHead(
            "DenseNet", model.features, "features", torch.relu,
            "functional adaptive_avg_pool2d (after ReLU)", dropout, linear,
        )
    if isinstance(model, tvm.MobileNetV2):
        dropout, linear = _split_classifier(model.classifier, arch=name, where="'classifier'")
        return GapHead("MobileNetV2", model.features, "features", None,
                       "functional adaptive_avg_pool2d", dropout, linear)
    if isinstance(model, tvm.VGG):
        raise UnsupportedModelError(
            f"VGG: found avgpool = {_describe(model.avgpool)} (a 7x7 grid, not a global average) "
            f"followed by the MLP classifier {_describe(model.classifier)}; {_REQUIRED}."
        )
    if isinstance(model, tvm.ShuffleNetV2):
        dropout, linear = _split_classifier(model.fc, arch=name, where="'fc'")
        return GapHead("ShuffleNetV2", model.conv5, "conv5", None, "functional mean over (H, W)", dropout, linear)
    for cls, feature_name in ((tvm.GoogLeNet, "inception5b"), (tvm.Inception3, "Mixed_7c"), (tvm.RegNet, "trunk_output")):
        if isinstance(model, cls):
            pool = _check_global_pool(model.avgpool, arch=name, where="'avgpool'")
            dropout, linear = _split_classifier(model.fc, arch=name, where="'fc'")
            drop = getattr(model, "dropout", None)
            return GapHead(name, getattr(model, feature_name), feature_name, None, pool,
                           drop if isinstance(drop, nn.Dropout) else dropout, linear)
    if all(hasattr(model, n) for n in ("layer4", "avgpool", "fc")):
        pool = _check_global_pool(model.avgpool, arch=name, where="'avgpool'")
        dropout, linear = _split_classifier(model.fc, arch=name, where="'fc'")
        return GapHead("ResNet", model.layer4, "layer4", None, pool, dropout, linear)
    if all(hasattr(model, n) for n in ("features", "avgpool", "classifier")):
        arch = "EfficientNet" if isinstance(model, tvm.EfficientNet) else (
            "MobileNetV3" if isinstance(model, tvm.MobileNetV3) else "features+classifier")
        label = name if arch == "features+classifier" else arch
        pool = _check_global_pool(model.avgpool, arch=label, where="'avgpool'")
        dropout, linear = _split_classifier(model.classifier, arch=label, where="'classifier'")
        return GapHead(arch, model.features, "features", None, pool, dropout, linear)
    if isinstance(model, nn.Sequential):
        return _sequential_head(model)
    children = ", ".join(f"{n}: {type(m).__name__}" for n, m in model.named_children()) or "none"
    raise UnsupportedModelError(
        f"{name}: could not find the last feature maps and the linear head (children: {children}); "
        f"{_REQUIRED}. Supported layouts: ResNet-style (layer4, avgpool, fc), DenseNet, "
        "EfficientNet, MobileNetV2, RegNet, ShuffleNetV2, GoogLeNet, Inception3, (features, avgpool, "
        "classifier), an nn.Sequential ending in AdaptiveAvgPool2d(1) -> Flatten -> (Dropout) -> Linear; "
        "for any other model name the layers: Explainer(model, blocks={'B4': 'name.of.last.map', ...}, head='name.of.linear')."
    )


def _sequential_head(model: nn.Sequential) -> GapHead:
    """``nn.Sequential(encoder..., AdaptiveAvgPool2d(1), [Flatten], [Dropout], Linear)``."""
    mods = list(model.named_children())
    pools = [i for i, (_, m) in enumerate(mods) if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]
    if not pools or pools[-1] == 0:
        raise UnsupportedModelError(
            f"Sequential: no global average pooling found among its layers "
            f"({', '.join(type(m).__name__ for _, m in mods)}); {_REQUIRED}."
        )
    i = pools[-1]
    _check_global_pool(mods[i][1], arch="Sequential", where=f"layer {mods[i][0]!r}")
    tail = nn.Sequential(*[m for _, m in mods[i + 1:]])
    dropout, linear = _split_classifier(tail, arch="Sequential", where=f"after layer {mods[i][0]!r}")
    name, feature = mods[i - 1]
    return GapHead("Sequential", feature, name, None, f"layer {mods[i][0]!r} = AdaptiveAvgPool2d(1)", dropout, linear)


@contextlib.contextmanager
def capture_feature_maps(model: nn.Module, head: GapHead | None = None) -> Iterator[dict]:
    """Context manager that records the last feature maps of every forward pass.

    The yielded dictionary holds ``"maps"`` ``(N, D, H, W)`` after each
    forward pass of ``model``. The hook is removed on exit, also when the
    forward pass raises.

    Parameters
    ----------
    model : nn.Module
        The classifier.
    head : GapHead, optional
        Pre-computed result of :func:`find_gap_linear_head`.

    Example
    -------
    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    >>> with capture_feature_maps(m) as store:
    ...     _ = m(torch.rand(1, 3, 64, 64))
    >>> store["maps"].shape
    torch.Size([1, 512, 2, 2])
    """
    head = find_gap_linear_head(model) if head is None else head
    store: dict = {}
    post = head.post

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        # DenseNet applies an in-place ReLU to this output afterwards; apply
        # ``post`` on a copy so that what we store is what is pooled.
        store["maps"] = post(output.clone()) if post is not None else output

    handle = head.feature_module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def last_feature_maps(
    model: nn.Module,
    x: torch.Tensor,
    *,
    head: GapHead | None = None,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The last feature maps ``(N, D, H, W)`` that the model pools, from one forward pass.

    Parameters
    ----------
    model : nn.Module
        A model accepted by :func:`find_gap_linear_head`. It runs in eval mode
        (BatchNorm on its running statistics, no dropout: the exact identity),
        and every module's train/eval flag is restored afterwards.
    x : torch.Tensor
        Input batch ``(N, 3, H, W)`` on the model's device.
    head : GapHead, optional
        Pre-computed result of :func:`find_gap_linear_head`.
    return_logits : bool
        Also return the model's output ``(N, C)``.

    Returns
    -------
    maps : torch.Tensor
        ``(N, D, H, W)``.
    logits : torch.Tensor
        ``(N, C)``, only when ``return_logits``.

    Example
    -------
    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    >>> last_feature_maps(m, torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 512, 2, 2])
    """
    check_tensor(x, 4, name="x", shape_doc="(N, 3, H, W)")
    with eval_mode(model), capture_feature_maps(model, head) as store:
        logits = model(x)
    if "maps" not in store:  # pragma: no cover - would mean a broken adapter
        raise RuntimeError("the feature module was not called during the forward pass")
    return (store["maps"], logits) if return_logits else store["maps"]


def _weight_bias(linear: nn.Linear | tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(linear, nn.Linear):
        return linear.weight, linear.bias
    if isinstance(linear, tuple) and len(linear) == 2 and isinstance(linear[0], torch.Tensor):
        return linear[0], linear[1]
    raise TypeError(
        "linear must be an nn.Linear or a tuple (weight (C, D), bias (C,) or None), "
        f"got {type(linear).__name__}"
    )


def decompose_logits(feature_maps: torch.Tensor, linear: nn.Linear | tuple) -> torch.Tensor:
    """Per-position class scores ``s_c(a_p) = w_c . a_p + b_c`` (the CAM), shape ``(N, C, H, W)``.

    Their spatial mean equals the logits of a global-average-pool + linear
    head exactly (up to float rounding): ``decompose_logits(A, fc).mean((2, 3))
    == fc(A.mean((2, 3)))``.

    Parameters
    ----------
    feature_maps : torch.Tensor
        Last feature maps ``(N, D, H, W)`` (see :func:`last_feature_maps`).
    linear : nn.Linear or tuple
        The final layer (``in_features == D``), or a tuple ``(weight (C, D),
        bias (C,) or None)``.

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)`` on the device and in the dtype of ``feature_maps``.

    Example
    -------
    >>> import torch
    >>> fc = torch.nn.Linear(8, 3)
    >>> A = torch.randn(2, 8, 4, 4)
    >>> s = decompose_logits(A, fc)
    >>> bool(torch.allclose(s.mean((2, 3)), fc(A.mean((2, 3))), atol=1e-5))
    True
    """
    check_tensor(feature_maps, 4, name="feature_maps", shape_doc="(N, D, H, W)")
    if not feature_maps.is_floating_point():
        raise TypeError(f"feature_maps must be floating point, got dtype {feature_maps.dtype}")
    weight, bias = _weight_bias(linear)
    if weight.ndim != 2 or weight.shape[1] != feature_maps.shape[1]:
        raise ValueError(
            f"the linear layer expects D = {weight.shape[-1]} input features (weight shape "
            f"{tuple(weight.shape)}), but feature_maps has shape {tuple(feature_maps.shape)} with "
            f"D = {feature_maps.shape[1]}; pass the maps that the model pools (N, D, H, W)."
        )
    w = weight.detach().to(device=feature_maps.device, dtype=feature_maps.dtype)
    s = torch.einsum("cd,ndhw->nchw", w, feature_maps)
    if bias is not None:
        s = s + bias.detach().to(device=feature_maps.device, dtype=feature_maps.dtype).view(1, -1, 1, 1)
    return s


def logit_maps(
    model: nn.Module, x: torch.Tensor, *, head: GapHead | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position class scores of a model and its logits, from one forward pass.

    Parameters
    ----------
    model : nn.Module
        A model accepted by :func:`find_gap_linear_head`.
    x : torch.Tensor
        ``(N, 3, H, W)``.
    head : GapHead, optional
        Pre-computed head.

    Returns
    -------
    scores : torch.Tensor
        ``(N, C, H', W')``, see :func:`decompose_logits`.
    logits : torch.Tensor
        ``(N, C)``; equals ``scores.mean((2, 3))`` (the model runs in eval mode,
        its modes restored afterwards).
    """
    head = find_gap_linear_head(model) if head is None else head
    maps, logits = last_feature_maps(model, x, head=head, return_logits=True)
    return decompose_logits(maps, head.linear), logits


def linear_prototypes(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``w_c`` and biases ``b_c`` of the final linear layer (the SEM's prototypes).

    Returns detached copies: changing them does not change the model.

    Returns
    -------
    weight : torch.Tensor
        ``(C, D)``.
    bias : torch.Tensor
        ``(C,)`` (zeros when the layer has no bias).

    Example
    -------
    >>> import torchvision
    >>> W, b = linear_prototypes(torchvision.models.resnet18(weights=None, num_classes=3))
    >>> tuple(W.shape), tuple(b.shape)
    ((3, 512), (3,))
    """
    lin = find_gap_linear_head(model).linear
    weight = lin.weight.detach().clone()
    bias = lin.bias.detach().clone() if lin.bias is not None else torch.zeros(
        lin.out_features, dtype=weight.dtype, device=weight.device)
    return weight, bias
