"""The front door: explain any GAP + linear CNN with k-means, in one object.

:class:`Explainer` composes what the rest of the package offers piece by piece
(METHOD 2-5):

1. reads the network (:func:`kmexplain_utils.architectures.adapt`): its linear
   head and its blocks B1..B4, with their registration;
2. builds the level's feature space (:class:`~kmexplain_utils.features.LevelFeatures`:
   registered resampling, per-block scales);
3. fits a per-class k-means classifier on the pooled embeddings
   (:class:`~kmexplain_utils.classifier.KMeansClassifier`) and k-means concepts on
   sampled positions (:class:`~kmexplain_utils.concepts.ConceptModel`), both from
   one streamed pass over the training data;
4. explains a batch (:meth:`Explainer.explain`) with the target prototype's
   attribution map, the contrastive map against the runner-up (or ``versus``),
   the concept map and the score split by concept, all at image size, drawn at
   each position's registered centre.

Every step is forward-only: no gradient is computed.

Example
-------
>>> import torch, torchvision
>>> from kmexplain_utils import Explainer
>>> model = torchvision.models.resnet18(weights=None, num_classes=2).eval()
>>> x, y = torch.rand(12, 3, 64, 64), torch.tensor([0, 1] * 6)
>>> ex = Explainer(model, level="B34", n_prototypes=2, n_concepts=3, device="cpu").fit(x, y)
>>> e = ex.explain(x[:2])
>>> e.attribution.shape, e.concepts.shape, e.concept_contributions.shape
(torch.Size([2, 64, 64]), torch.Size([2, 64, 64]), torch.Size([2, 3]))
>>> e.completeness_error < 1e-4
True
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import NotFittedError, check_tensor
from .features import LevelFeatures, fit_and_sample, iter_batches, model_adapter, parse_level
from .resample import GridGeometry, as_size, resample_labels, resample_map

__all__ = ["Explainer", "Explanation"]


@dataclasses.dataclass
class Explanation:
    """The explanation of a batch of ``N`` images by an :class:`Explainer`.

    Maps are at image size ``(H, W)``, resampled from the level's grid at the
    registered centres of its positions; the ``*_grid`` fields hold them on the
    grid, where the exact identities hold.

    Attributes
    ----------
    predicted : torch.Tensor or numpy.ndarray
        ``(N,)`` class predicted by the k-means classifier.
    target : torch.Tensor or numpy.ndarray
        ``(N,)`` class explained (the prediction unless ``target`` was given).
    versus : torch.Tensor or numpy.ndarray or None
        ``(N,)`` rival class of the contrastive map.
    score : torch.Tensor
        ``(N,)`` the target class's best prototype score ``2 mu . z - ||mu||^2``.
    prototype : torch.Tensor
        ``(N,)`` int64 row of ``explainer.classifier_.prototypes_`` that gives ``score``.
    class_scores : torch.Tensor
        ``(N, C)`` best prototype score of every class (columns: ``explainer.classes_``).
    attribution : torch.Tensor or None
        ``(N, H, W)`` the target prototype's map ``m(p) = 2 mu . a_p - ||mu||^2``.
    contrastive : torch.Tensor or None
        ``(N, H, W)`` target map minus the rival's best-prototype map.
    concepts : torch.Tensor or None
        ``(N, H, W)`` int64 concept of the registered position nearest to each pixel.
    concept_contributions : torch.Tensor or None
        ``(N, K')`` the score split by concept (rows sum to ``score``).
    completeness_error : float
        Largest ``|grid mean of the attribution map - score|`` over the batch
        (0 up to float rounding: the map explains the score exactly).
    attribution_grid, contrastive_grid, concepts_grid : torch.Tensor or None
        The same maps on the level's grid ``(N, H_S, W_S)``.
    geometry : GridGeometry or None
        Where the grid's positions sit on the image.
    images : torch.Tensor
        ``(N, 3, H, W)`` the images (on the CPU), for :meth:`plot`.
    level : str
        The explained level. The ``"logits"`` level has no positions: its map
        fields are ``None``.
    class_names : list of str or None
        Names of ``explainer.classes_``.
    """

    predicted: Any
    target: Any
    versus: Any
    score: torch.Tensor
    prototype: torch.Tensor
    class_scores: torch.Tensor
    attribution: torch.Tensor | None
    contrastive: torch.Tensor | None
    concepts: torch.Tensor | None
    concept_contributions: torch.Tensor | None
    completeness_error: float
    attribution_grid: torch.Tensor | None
    contrastive_grid: torch.Tensor | None
    concepts_grid: torch.Tensor | None
    geometry: GridGeometry | None
    images: torch.Tensor
    level: str
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def _name(self, label: Any) -> str:
        if self.class_names is not None and isinstance(label, numbers.Integral) and 0 <= int(label) < len(self.class_names):
            return str(self.class_names[int(label)])
        return str(label)

    def plot(self, i: int = 0, ax: Any = None, *, ncols: int = 2, size: float = 2.8):
        """Image, attribution, contrastive and concept maps of image ``i`` in a grid.

        Parameters
        ----------
        i : int
            Image of the batch.
        ax : sequence of 4 Axes, optional
            Where to draw (in this order); default a new figure.
        ncols : int, default 2
            Panels per row of a new figure: the default 2 x 2 grid keeps every panel wider
            than 160 px on a 736 px text column, colour bars included; 4 gives one row.
        size : float, default 2.8
            Inches per panel (with its colour bar) of a new figure.

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        from .plotting import show_heatmap, show_image, show_label_map

        if not 0 <= int(i) < len(self):
            raise IndexError(f"image {i} is not in this explanation of {len(self)} image(s)")
        if ax is None:
            if int(ncols) not in (1, 2, 3, 4):
                raise ValueError(f"ncols must be 1, 2, 3 or 4 panels per row, got {ncols}")
            nrows = -(-4 // int(ncols))
            fig, grid = plt.subplots(nrows, int(ncols), figsize=(size * int(ncols), size * nrows),
                                     squeeze=False, layout="constrained")
            axes = list(grid.reshape(-1))
            for a in axes[4:]:
                a.axis("off")
        else:
            axes = list(ax)
            if len(axes) != 4:
                raise ValueError(f"ax must be a sequence of 4 Axes, got {len(axes)}")
            fig = axes[0].figure
        from .plotting import short_label

        tgt = short_label(self._name(_item(self.target, i)))
        show_image(self.images[i], ax=axes[0], title=f"predicted:\n{short_label(self._name(_item(self.predicted, i)))}")
        if self.attribution is None:
            for a in axes[1:]:
                a.axis("off")
            return fig
        show_heatmap(self.images[i], self.attribution[i].cpu(), ax=axes[1], diverging=True, colorbar=True,
                     title=f"{self.level} attribution:\nwhy {tgt}")
        rival = short_label(self._name(_item(self.versus, i))) if self.versus is not None else "?"
        show_heatmap(self.images[i], self.contrastive[i].cpu(), ax=axes[2], diverging=True, colorbar=True,
                     title=f"contrastive:\n{tgt} rather than {rival}")
        # alpha 1: the concept colours alone (no image colour shows through), on the image's grid
        show_label_map(self.images[i], self.concepts[i].cpu(), ax=axes[3], background=False, alpha=1.0,
                       title=f"{self.level} concepts\n(K' = {int(self.concept_contributions.shape[1])})")
        return fig


def _item(v: Any, i: int) -> Any:
    x = v[i]
    return x.item() if hasattr(x, "item") else x


class Explainer:
    """Post-hoc self-explanation of a CNN with k-means: one object, fit then explain.

    Parameters
    ----------
    model : nn.Module
        A CNN ending in global average pooling -> (dropout) -> one linear layer
        (torchvision ResNet, DenseNet, EfficientNet, MobileNetV2, RegNet,
        ShuffleNetV2, GoogLeNet, Inception v3, the book's TinyResNet, or any
        model with ``blocks=`` and ``head=``), or a module that holds one (a
        normalisation wrapper, ``nn.Sequential(normalize, net)``,
        ``nn.DataParallel(net)``: see :func:`kmexplain_utils.sem.find_network`).
        It is run in eval mode and every module's mode is restored; it is never
        modified or moved.
    level : str
        Feature space: ``"logits"``, ``"B4"``, ``"B34"``, ``"B234"``, ``"B1234"`` ...
    n_prototypes : int
        k-means prototypes per class.
    n_concepts : int
        k-means concepts over positions (per class with ``per_class_concepts``).
    blocks : dict, optional
        ``{"B1": "module.name", ..., "B4": "module.name"}`` for a model whose
        blocks are not found automatically; a block whose map is a function of
        the module's output applied in ``forward`` is a pair, e.g.
        ``{"B4": ("bn_head", torch.nn.functional.relu6)}`` (see
        :func:`kmexplain_utils.architectures.adapt`).
    head : str or nn.Linear, optional
        Its final linear layer.
    random_state : int or None
        Seed of the position sampling and of every k-means (``None``: random).
    device : str or torch.device
        Where k-means runs (``"auto"``: CUDA when available); the network runs
        where it is.
    registration : {"exact", "cell"}
        How grids are placed on the image (``"cell"``: the first edition's
        convention, for ablations).
    per_class_concepts : bool
        Fit ``n_concepts`` concepts per class and explain an image with the
        concepts of its target class.
    positions_per_image : int
        Positions sampled from every training image for the concepts.
    batch_size : int
        Images per forward pass when fitting.
    scale : {"rms", "none"} or dict
        Per-block scaling of multi-block levels (see :class:`LevelFeatures`).

    Attributes
    ----------
    adapter_ : Adapter
        How the model was read.
    level_features_ : LevelFeatures
    classifier_ : KMeansClassifier
    concepts_ : ConceptModel or None
        ``None`` for the ``"logits"`` level.
    classes_ : numpy.ndarray
        Class labels seen in :meth:`fit`.
    class_names_ : list of str or None
        Their names, when known.
    registration_ : dict of str to BlockRegistration
        Grid, stride and offset of the level's blocks at the fitting image size.
    temperature_ : float
        Temperature of the class scores' softmax, fitted on the training embeddings (see
        :meth:`score_model`).
    """

    def __init__(
        self,
        model: nn.Module,
        level: str = "B234",
        n_prototypes: int = 4,
        n_concepts: int = 8,
        *,
        blocks: dict | None = None,
        head: Any = None,
        random_state: int | None = 0,
        device: str | torch.device = "auto",
        registration: str = "exact",
        per_class_concepts: bool = False,
        positions_per_image: int = 32,
        batch_size: int = 64,
        scale: Any = "rms",
    ) -> None:
        self.model = model
        self.level = level
        self.n_prototypes = n_prototypes
        self.n_concepts = n_concepts
        self.blocks = blocks
        self.head = head
        self.random_state = random_state
        self.device = device
        self.registration = registration
        self.per_class_concepts = per_class_concepts
        self.positions_per_image = positions_per_image
        self.batch_size = batch_size
        self.scale = scale

    # ------------------------------------------------------------ checks
    def _warn_training(self) -> None:
        if self.model.training:
            warnings.warn(
                "the model is in training mode; the Explainer runs it in eval mode (BatchNorm uses its running "
                "statistics, dropout is off) and restores its mode afterwards.",
                UserWarning,
                stacklevel=4,  # the user's fit -> _start_fit -> here
            )

    def _check_images(self, x: torch.Tensor, *, name: str = "images") -> None:
        check_tensor(x, 4, name=name, shape_doc="(N, 3, H, W)")
        if x.shape[1] != 3:
            raise ValueError(
                f"{name} must be RGB images (N, 3, H, W), got {x.shape[1]} channel(s) in shape {tuple(x.shape)}; "
                "repeat a grey channel three times (x.expand(-1, 3, -1, -1))."
            )
        if not x.is_floating_point():
            raise TypeError(f"{name} must be floating point in [0, 1], got dtype {x.dtype}; use x.float() / 255")
        stride = self._total_stride()
        H, W = x.shape[-2:]
        if H < stride or W < stride:
            raise ValueError(
                f"{name} of {H}x{W} px are smaller than the network's total stride {stride:g} px (B4's): B4 would "
                f"have no positions. Use images of at least {stride:g} px, ideally a multiple of {stride:g}."
            )
        if (H % stride or W % stride) and not getattr(self, "_warned_size", False):
            self._warned_size = True
            warnings.warn(
                f"image size {H}x{W} is not a multiple of the total stride {stride:g}: position i of each block is "
                "still centred on pixel s*i + o (registration is exact at any size), but the last positions do not "
                "reach the far border, whose pixels take the nearest (last) position.",
                UserWarning,
                stacklevel=3,
            )

    def _block_registration(self) -> dict:
        """Registration of the model's blocks on a 256 px probe (strides and offsets do not depend on the size)."""
        if not hasattr(self, "_regs"):
            from .architectures import registration

            self._regs = registration(self.model, 256, model_adapter(self.model, self.blocks, self.head))
        return self._regs

    def _total_stride(self) -> float:
        return max(r.stride[0] for r in self._block_registration().values())

    def _check_nesting(self) -> None:
        regs = self._block_registration()
        blocks = [b for b in parse_level(self.level) if b in regs]
        strides = [regs[b].stride[0] for b in blocks]
        for (b1, s1), (b2, s2) in zip(zip(blocks, strides), zip(blocks[1:], strides[1:])):
            if not s1 < s2:
                raise ValueError(
                    f"the grids of {b1} ({regs[b1].module}, stride {s1:g}) and {b2} ({regs[b2].module}, stride {s2:g}) "
                    "do not nest: each block must be coarser than the one before it (B1 finest, B4 coarsest). "
                    f"Check blocks= ({', '.join(f'{b}: stride {r.stride[0]:g}' for b, r in regs.items())})."
                )

    def _check_fitted(self) -> None:
        if not hasattr(self, "classifier_"):
            raise NotFittedError(
                "this Explainer is not fitted yet; call explainer.fit(train_images, train_labels) (or fit(dataset)) "
                "before predict, score or explain."
            )

    # ------------------------------------------------------------- fit
    def fit(self, data: Any, labels: Any = None, *, class_names: Sequence[str] | None = None) -> "Explainer":
        """Fit the level, the k-means classifier and the concepts on training images.

        Parameters
        ----------
        data : torch.Tensor, Dataset or DataLoader
            ``(N, 3, H, W)`` images in ``[0, 1]`` (with ``labels``), or a
            dataset / loader of ``(image, label)``; streamed in batches, at
            most one batch of full-resolution maps is held.
        labels : array-like, optional
            ``(N,)`` class labels of any kind (ints, strings, ...), when ``data`` is a
            tensor; ``classes_`` holds them sorted.
        class_names : sequence of str, optional
            Names of the classes (default: ``data.class_names`` when present).

        Returns
        -------
        Explainer
            ``self``.
        """
        self._start_fit()
        if isinstance(data, torch.Tensor):
            if labels is None:
                raise ValueError("labels are required with an image tensor: fit(images (N, 3, H, W), labels (N,))")
            y = self._encode_labels(labels)
            if y.shape != (data.shape[0],):
                raise ValueError(f"labels must have shape (N,) = ({data.shape[0]},), got {tuple(y.shape)}")
            self._check_images(data)
            source: Any = (data, y)
        else:
            if labels is not None:
                raise ValueError("labels= is only for an image tensor; a dataset or loader yields (image, label)")
            self._label_values = None
            source = data
            first, _ = next(iter(iter_batches(data, 1)[0]))
            self._check_images(first)
        self.class_names_ = list(class_names) if class_names is not None else (
            list(data.class_names) if hasattr(data, "class_names") else None)
        lf = self.new_level_features()
        per_image = lf.sample_size(self.positions_per_image)  # 0: the level has no positions
        self._check_nesting()  # from the strides, before the pass over the data
        # one pass over the data: the level's scales, the pooled embeddings and the position sample
        sample, Z, y = fit_and_sample(
            self.model, source, lf, per_image=per_image, random_state=self.random_state,
            batch_size=self.batch_size, desc=f"fit {self.level}",
        )
        self._set_level_features(lf)
        if y is None:
            raise ValueError("the data has no labels: pass (images, labels) or a dataset of (image, label)")
        if self._label_values is not None:  # back from the int64 codes that travelled with the images
            y = self._label_values[y.cpu().numpy()]
        self.fit_classifier(Z, y)
        self.concepts_ = None
        if sample is not None:  # the logits level samples no positions: no concepts
            self.fit_concepts(source, sample=sample)
        return self

    # The steps of fit, for a caller that fits them on different data (the evaluation fits the
    # scales on fewer images than the classifier): each is what fit runs, nothing else.
    def new_level_features(self) -> LevelFeatures:
        """The level's feature space with this explainer's settings, not fitted (what :meth:`fit` fits)."""
        return LevelFeatures(self.level, scale=self.scale, batch_size=self.batch_size, blocks=self.blocks,
                             head=self.head, registration=self.registration)

    def fit_level(self, data: Any) -> "Explainer":
        """Fit only the level's feature space (its per-block scales) on images ``data``; the first step of :meth:`fit`.

        Parameters
        ----------
        data : torch.Tensor, Dataset or DataLoader
            ``(N, 3, H, W)`` images in ``[0, 1]`` (see :func:`~kmexplain_utils.features.iter_batches`).

        Returns
        -------
        Explainer
            ``self``, with ``level_features_`` and ``registration_``; then :meth:`fit_classifier`
            and :meth:`fit_concepts`.
        """
        self._start_fit()
        first, _ = next(iter(iter_batches(data, 1)[0]))
        self._check_images(first)
        self._label_values, self.class_names_ = None, None
        self._check_nesting()
        self._set_level_features(self.new_level_features().fit(self.model, data))
        return self

    def fit_classifier(self, Z: torch.Tensor, y: Any) -> "Explainer":
        """Fit the k-means classifier and its softmax temperature on pooled embeddings; a step of :meth:`fit`.

        Parameters
        ----------
        Z : torch.Tensor
            ``(N, D_S)`` pooled embeddings of training images at this level (``level_features_.pooled``).
        y : array-like
            ``(N,)`` their labels.

        Returns
        -------
        Explainer
            ``self``, with ``classifier_``, ``classes_`` and ``temperature_``.
        """
        from .classifier import KMeansClassifier
        from .scores import fit_temperature

        self.classifier_ = KMeansClassifier(
            self.n_prototypes, random_state=self.random_state, device=self.device).fit(Z, y)
        self.classes_ = self.classifier_.classes_
        # softmax(scores / T) calibrated on the training embeddings: the model deletion/insertion track
        self.temperature_ = fit_temperature(self.classifier_.class_scores(Z), self.classifier_.class_columns(y))
        return self

    def fit_concepts(self, data: Any, sample: Any = None) -> "Explainer":
        """Fit the k-means concepts on positions of training images; the last step of :meth:`fit`.

        Parameters
        ----------
        data : tuple, Dataset or DataLoader
            ``(images (N, 3, H, W), labels (N,))`` or a dataset of ``(image, label)``.
        sample : PositionSample, optional
            Positions already sampled from ``data`` at this level (default: sampled here, with
            ``positions_per_image`` and ``random_state``: the same draws as :meth:`fit`'s pass).

        Returns
        -------
        Explainer
            ``self``, with ``concepts_``.
        """
        from .concepts import ConceptModel

        if not hasattr(self, "level_features_"):
            raise NotFittedError("fit the level first: explainer.fit_level(images) (or fit(images, labels))")
        self.concepts_ = ConceptModel(
            self.n_concepts, level=self.level, per_class=self.per_class_concepts,
            positions_per_image=self.positions_per_image, random_state=self.random_state, device=self.device,
        ).fit(self.model, data, level_features=self.level_features_, sample=sample)
        return self

    def _start_fit(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(self.model).__name__}")
        self.adapter_ = model_adapter(self.model, self.blocks, self.head)
        self._warn_training()

    def _set_level_features(self, lf: LevelFeatures) -> None:
        self.level_features_ = lf
        self.registration_ = lf.registration_

    def _encode_labels(self, labels: Any) -> torch.Tensor:
        """``(N,)`` labels as a tensor that can travel with the images (int64 codes for strings and the like).

        Integer labels are kept as they are. Any other kind (strings, floats,
        booleans, objects) is coded by its rank among the sorted distinct labels,
        which is its column in ``classes_``; :meth:`fit` gives the classifier the
        labels themselves back, so ``classes_`` holds them.
        """
        if isinstance(labels, torch.Tensor) and not labels.is_floating_point() and not labels.is_complex() \
                and labels.dtype != torch.bool:
            self._label_values = None
            return labels.detach()
        arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if arr.ndim != 1:
            raise ValueError(f"labels must be one label per image, shape (N,), got shape {arr.shape}")
        if arr.dtype.kind in "iu":
            self._label_values = None
            return torch.from_numpy(arr.astype(np.int64))
        try:
            values, codes = np.unique(arr, return_inverse=True)
        except TypeError as e:
            raise TypeError(f"labels must be sortable values of one kind (ints, strings ...): {e}") from None
        self._label_values = values
        return torch.from_numpy(codes.reshape(-1).astype(np.int64))

    # -------------------------------------------------------- predicting
    def _forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor]:
        self._check_fitted()
        self._check_images(x, name="x")
        return self.level_features_.maps_and_pooled(self.model, x)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings ``z_S`` ``(N, D_S)`` of images ``x`` ``(N, 3, H, W)``."""
        return self._forward(x)[1]

    def predict(self, x: torch.Tensor) -> Any:
        """Class labels ``(N,)`` predicted by the k-means classifier for images ``x`` ``(N, 3, H, W)``."""
        return self.classifier_.predict(self.transform(x))

    def score(self, x: torch.Tensor, y: Any) -> float:
        """Accuracy of :meth:`predict` on images ``x`` with labels ``y``."""
        return float(self.classifier_.score(self.transform(x), y))

    def score_model(self, network: nn.Module | None = None) -> nn.Module:
        """The k-means classifier as a model, images ``(N, 3, H, W)`` -> class scores ``(N, C)``.

        This is the model a k-means map explains: pass it to
        :func:`kmexplain_utils.evaluation.metrics.deletion_insertion`. Scores are divided by
        ``temperature_`` (fitted on the training embeddings), so that their softmax is a
        calibrated classifier; the ranking of the classes is unchanged.

        Parameters
        ----------
        network : nn.Module, optional
            Run this network instead of ``model`` (e.g. a randomised copy), with the fitted
            level and prototypes.

        Returns
        -------
        kmexplain_utils.scores.KMeansScoreModel
        """
        from .scores import KMeansScoreModel

        self._check_fitted()
        return KMeansScoreModel(self.model if network is None else network, self.level_features_,
                                self.classifier_, temperature=self.temperature_)

    def with_model(self, network: nn.Module) -> "Explainer":
        """A copy that runs ``network`` (same architecture) with this explainer's fitted level, prototypes and concepts.

        Used by the model-randomisation sanity check: the explanation of a randomised network
        with the prototypes fitted on the trained one.
        """
        import copy

        self._check_fitted()
        twin = copy.copy(self)
        twin.model = network
        return twin

    def target_columns(self, target: Any, n: int) -> torch.Tensor:
        """Columns of ``classes_`` for ``target``: a label, a class name, or a sequence of either (one per image).

        This is the one converter for "which class" in the front door.
        """
        self._check_fitted()
        names = self.class_names_
        classes = self.classifier_.classes_

        def convert(t: Any) -> Any:
            if isinstance(t, str) and not (classes.dtype.kind in "USO" and t in set(classes.tolist())):
                if names is None or t not in names:
                    known = names if names is not None else classes.tolist()
                    raise ValueError(f"unknown class name {t!r}; the classes are {known}")
                return names.index(t) if classes.dtype.kind not in "USO" else classes[names.index(t)]
            return t

        if isinstance(target, (str, numbers.Integral)) or (isinstance(target, torch.Tensor) and target.ndim == 0):
            target = convert(target)
        elif isinstance(target, (list, tuple)):
            target = [convert(t) for t in target]
        return self.classifier_.class_columns(target, n=n)

    def explain(self, x: torch.Tensor, target: Any = None, versus: Any = None) -> Explanation:
        """Explain the k-means classifier's decision on images ``x`` (forward passes only).

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 3, H, W)`` images in ``[0, 1]``.
        target : None, label, class name or sequence, optional
            The class to explain: ``None`` the prediction; a label (as given to
            :meth:`fit`), a class name, or one of either per image.
        versus : None, label, class name or sequence, optional
            The rival of the contrastive map; default: the best other class.

        Returns
        -------
        Explanation
        """
        from .attribution import choose_prototypes, concept_contributions

        feats, z = self._forward(x)
        clf = self.classifier_
        n = z.shape[0]
        with torch.no_grad():
            if versus is None and len(clf.classes_) < 2:
                raise ValueError("a contrastive map needs at least two classes")
            choice = choose_prototypes(clf, z, None if target is None else self.target_columns(target, n),
                                       None if versus is None else self.target_columns(versus, n))
            scores, index, pred_col, col, rival_col = (choice.class_scores, choice.index, choice.predicted,
                                                       choice.target, choice.rival)
            score, proto, rows = choice.score, choice.prototype, torch.arange(n, device=scores.device)
            as_labels = lambda c: clf._labels_of(c, z)  # noqa: E731
            out: dict[str, Any] = dict(
                predicted=as_labels(pred_col), target=as_labels(col), versus=as_labels(rival_col),
                score=score, prototype=proto, class_scores=scores,
                attribution=None, contrastive=None, concepts=None, concept_contributions=None,
                completeness_error=0.0, attribution_grid=None, contrastive_grid=None, concepts_grid=None,
                geometry=None, images=x.detach().cpu(), level=self.level, class_names=self.class_names_,
            )
            if feats is None:
                return Explanation(**out)
            lf = self.level_features_
            size = tuple(x.shape[-2:])
            dev, dt = next(iter(feats.values())).device, next(iter(feats.values())).dtype
            # m(p) = 2 mu . a_p - ||mu||^2 (attribution_map), from the block maps: project, then resample
            mu = clf.prototypes_.to(device=dev, dtype=dt)
            pair = torch.stack([mu[proto.to(dev)], mu[index[rows, rival_col].to(dev)]], dim=1)  # (N, 2, D)
            dots = lf.project(feats, pair, size)
            sq = (pair * pair).sum(2)
            m = 2 * dots[:, 0] - sq[:, 0, None, None]
            m_rival = 2 * dots[:, 1] - sq[:, 1, None, None]
            geo = lf.grid_geometry_
            cm = self.concepts_
            allowed = None
            if cm.concept_classes_ is not None:
                if getattr(self, "_label_values", None) is not None:
                    lab = col.cpu()  # the concepts were fitted on the labels' codes, i.e. columns of classes_
                else:
                    lab = torch.as_tensor(clf.classes_[col.cpu().numpy()])
                allowed = lab.to(dev)[:, None] == cm.concept_classes_.to(dev)[None, :]
            # the nearest concept: argmax of 2 c . a_p - ||c||^2 (concept_map), projected the same way
            cen = cm.centroids_.to(device=dev, dtype=dt)
            c_scores = 2 * lf.project(feats, cen, size) - (cen * cen).sum(1)[None, :, None, None]
            if allowed is not None:
                c_scores = c_scores.masked_fill(~allowed[:, :, None, None], -torch.inf)
            c_grid = c_scores.argmax(1)
            out.update(
                attribution_grid=m, contrastive_grid=m - m_rival, concepts_grid=c_grid, geometry=geo,
                attribution=resample_map(m, geo, size), contrastive=resample_map(m - m_rival, geo, size),
                concepts=resample_labels(c_grid, geo, size),
                concept_contributions=concept_contributions(m, c_grid, cm.centroids_.shape[0]),
                completeness_error=float((m.mean((1, 2)) - score.to(m.dtype)).abs().max()),
            )
        return Explanation(**out)

    def __repr__(self) -> str:
        return (f"Explainer({type(self.model).__name__}, level={self.level!r}, n_prototypes={self.n_prototypes!r}, "
                f"n_concepts={self.n_concepts!r})")
