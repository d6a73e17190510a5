"""Every public function that runs a user's network leaves it exactly as found.

For each such function (the table ``CALLS`` below) and a model in eval mode, in
training mode and in a mixed mode (some submodules training, others not), the
test checks afterwards that

- every submodule's ``.training`` flag is what it was;
- every parameter and buffer is bit-identical (BatchNorm running statistics and
  ``num_batches_tracked`` included), on the same device, with the same dtype;
- ``requires_grad`` flags are unchanged and no ``.grad`` was written;
- no forward/backward hook is left on any module (nor a global one).

The table cannot be forgotten: :func:`test_every_public_function_taking_a_model_is_covered`
walks the ``__all__`` of every module of the package and fails for any public
function or method with a ``model`` / ``network`` argument that is neither in
``CALLS`` nor in ``NOT_RUNNING`` (with the reason it does not run the model).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import kmexplain_utils
from tiny_models import SmallResNetLike

torch.set_num_threads(1)

N_CLASSES = 3
SIZE = 32


class _Net(SmallResNetLike):
    """Batch norm in every block and dropout before the linear layer: training mode matters."""

    def __init__(self) -> None:
        super().__init__(N_CLASSES, width=4, stem=True, batch_norm=True)
        self.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(32, N_CLASSES))


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = _Net()
    m.train()
    with torch.no_grad():  # non-trivial running statistics
        m(torch.rand(8, 3, SIZE, SIZE))
    return m.eval()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 3, SIZE, SIZE, generator=g), torch.arange(12) % N_CLASSES


class Ctx:
    """The model, images and the fitted objects a call needs (built lazily, in eval mode)."""

    def __init__(self, model: nn.Module, tmp_path: Any) -> None:
        self.model = model
        self.x, self.y = _data()
        self.tmp_path = tmp_path
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def explainer(self) -> Any:
        return self._get("ex", lambda: api("Explainer")(self.model, level="B34", n_prototypes=1, n_concepts=2,
                                                 positions_per_image=4, device="cpu").fit(self.x, self.y))

    @property
    def lf(self) -> Any:
        return self.explainer.level_features_

    @property
    def clf(self) -> Any:
        return self.explainer.classifier_

    @property
    def cm(self) -> Any:
        return self.explainer.concepts_


def _public() -> dict[str, list[Any]]:
    """Qualified name in its module (``"deletion_insertion"``, ``"Explainer.fit"``) -> the public objects so named.

    Every module's ``__all__``, each object where it is defined: the table below does not depend on the
    package's layout (which module holds what).
    """
    found: dict[str, list[Any]] = {}
    for info in pkgutil.walk_packages(kmexplain_utils.__path__, "kmexplain_utils."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # a command line: importing it runs it
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name, None)
            if getattr(obj, "__module__", None) != info.name:
                continue  # re-exported: counted where it is defined
            if inspect.isfunction(obj) or inspect.isclass(obj):
                found.setdefault(name, []).append(obj)
            if inspect.isclass(obj):
                for k, v in vars(obj).items():
                    if inspect.isfunction(v) and (not k.startswith("_") or k == "__init__"):
                        found.setdefault(f"{name}.{k}", []).append(v)
    return found


_PUBLIC = _public()


def _takes_model(obj: Any) -> bool:
    obj = inspect.unwrap(obj)
    return inspect.isfunction(obj) and bool({"model", "network"} & set(inspect.signature(obj).parameters))


def api(name: str) -> Any:
    """The one public function or class called ``name`` (of those that take a model, when several are)."""
    objs = _PUBLIC.get(name, [])
    if len(objs) > 1:  # e.g. receptive_field.registration(model, ...) and the reading evaluation.readings.registration(df)
        objs = [o for o in objs if _takes_model(o)]
    assert len(objs) == 1, f"{len(objs)} public objects are called {name!r}"
    return objs[0]


def _concept_model_fit(c: Ctx) -> None:
    api("ConceptModel")(2, level="B34", positions_per_image=4, device="cpu").fit(
        c.model, (c.x, c.y), level_features=c.lf)


def _block_features(c: Ctx) -> None:
    with torch.no_grad(), api("block_features")(c.model, "B234") as extract:
        extract(c.x[:2])


def _capture(c: Ctx) -> None:
    with api("capture_feature_maps")(c.model):
        pass


def _cascading(c: Ctx) -> None:
    cam = api("cam")
    api("cascading_randomization")(c.model, lambda m, x: {"CAM": cam(m, x, target=0, size=SIZE)}, c.x[:2],
                                   layers=[("head", ["fc.1"]), ("B4", ["layer4.conv"])])


def _concept_views(c: Ctx) -> None:
    api("ConceptViews")(c.model, c.x[:2], {("B34", 2): c.cm}, {"B34": c.clf})


def _deletion_insertion_score_model(c: Ctx) -> None:
    e = c.explainer.explain(c.x[:2])
    api("deletion_insertion")(c.explainer.score_model(), c.x[:2], e.attribution,
                              c.clf.class_columns(e.predicted), steps=2)


def _grad_cam(c: Ctx, kind: str = "gradcam") -> None:
    """Every public ``grad_cam`` (the package's own, and the pytorch-grad-cam one where it exists)."""
    for fn in _PUBLIC["grad_cam"]:
        if "block" in inspect.signature(fn).parameters:
            fn(c.model, c.x[:2], 1, block="B3", kind=kind, size=SIZE)
        else:
            pytest.importorskip("pytorch_grad_cam")
            fn(c.model, c.x[:2], torch.tensor([0, 1]), target_layer=c.model.layer4)


def _score_model_train_eval(c: Ctx) -> None:
    wrapper = c.explainer.score_model()
    assert not wrapper.training  # a wrapper in eval mode from the start
    wrapper.train()
    wrapper.eval()
    with torch.no_grad():
        wrapper(c.x[:2])


def _with(context: Any, body: Callable[[], Any]) -> None:
    with context:
        body()


def _no_batch_statistics(c: Ctx) -> bool:
    return not any(m.training for m in c.model.modules())


#: public name -> a call that runs the user's model (``c.model``) through it.
CALLS: dict[str, Callable[[Ctx], Any]] = {
    "Explainer.fit": lambda c: c.explainer,
    "Explainer.fit_level": lambda c: api("Explainer")(c.model, level="B34", device="cpu").fit_level(c.x),
    "Explainer.fit_concepts": lambda c: api("Explainer")(
        c.model, level="B34", n_concepts=2, positions_per_image=4, device="cpu").fit_level(c.x).fit_concepts((c.x, c.y)),
    "Explainer.explain": lambda c: c.explainer.explain(c.x[:3], target=1, versus=2),
    "Explainer.predict": lambda c: c.explainer.predict(c.x[:3]),
    "Explainer.score": lambda c: c.explainer.score(c.x[:3], c.y[:3]),
    "Explainer.transform": lambda c: c.explainer.transform(c.x[:3]),
    "Explainer.score_model": _score_model_train_eval,
    "KMeansScoreModel.__init__": _score_model_train_eval,
    "deletion_insertion": lambda c: api("deletion_insertion")(
        c.model, c.x[:2], torch.rand(2, 4, 4), torch.tensor([0, 1]), steps=2),
    "deletion_insertion(score_model)": _deletion_insertion_score_model,
    "adapt": lambda c: api("adapt")(c.model),
    "registration": lambda c: api("registration")(c.model, SIZE),
    "Adapter.modules": lambda c: api("adapt")(c.model).modules(c.model),
    "model_adapter": lambda c: api("model_adapter")(c.model, {"B4": "layer4"}),
    "model_registration": lambda c: api("model_registration")(c.model, (SIZE, SIZE)),
    "block_features": _block_features,
    "BlockExtractor.__init__": _block_features,
    "LevelFeatures.fit": lambda c: api("LevelFeatures")("B234").fit(c.model, c.x),
    "LevelFeatures.fit(logits)": lambda c: api("LevelFeatures")("logits").fit(c.model, c.x),
    "LevelFeatures.pooled": lambda c: c.lf.pooled(c.model, c.x[:2]),
    "LevelFeatures.maps_and_pooled": lambda c: c.lf.maps_and_pooled(c.model, c.x[:2]),
    "BlockLevel.pooled": lambda c: c.lf.pooled(c.model, c.x[:2]),
    "BlockLevel.maps_and_pooled": lambda c: c.lf.maps_and_pooled(c.model, c.x[:2]),
    "BlockLevel.block_maps": lambda c: c.lf.block_maps(c.model, c.x[:2]),
    "LogitsLevel.pooled": lambda c: api("LevelFeatures")("logits").pooled(c.model, c.x[:2]),
    "LogitsLevel.maps_and_pooled": lambda c: api("LevelFeatures")("logits").maps_and_pooled(c.model, c.x[:2]),
    "fit_and_sample": lambda c: api("fit_and_sample")(
        c.model, (c.x, c.y), api("LevelFeatures")("B234"), per_image=2),
    "fit_and_sample(logits)": lambda c: api("fit_and_sample")(
        c.model, (c.x, c.y), api("LevelFeatures")("logits"), per_image=2),
    "BlockLevel.position_features": lambda c: c.lf.position_features(c.model, c.x[:2]),
    "extract_pooled": lambda c: api("extract_pooled")(c.model, (c.x, c.y), c.lf),
    "sample_positions": lambda c: api("sample_positions")(c.model, (c.x, c.y), c.lf, per_image=2),
    "eval_mode": lambda c: None,  # run as a `with` block by the test
    "keep_grads": lambda c: _with(
        api("keep_grads")(c.model),
        # a backward pass inside (not in training mode: keep_grads restores gradients, not batch statistics)
        lambda: c.model(c.x[:2]).sum().backward() if _no_batch_statistics(c) else None),
    "find_network": lambda c: api("find_network")(c.model),
    "ConceptModel.fit": _concept_model_fit,
    "ConceptModel.concept_map": lambda c: c.cm.concept_map(c.model, c.x[:2], size=SIZE),
    "explain": lambda c: api("explain")(c.model, c.x[:2], c.lf, c.clf),
    "cam": lambda c: api("cam")(c.model, c.x[:2], target=1, size=SIZE),
    "find_gap_linear_head": lambda c: api("find_gap_linear_head")(c.model),
    "capture_feature_maps": _capture,
    "last_feature_maps": lambda c: api("last_feature_maps")(c.model, c.x[:2]),
    "logit_maps": lambda c: api("logit_maps")(c.model, c.x[:2]),
    "linear_prototypes": lambda c: api("linear_prototypes")(c.model),
    "grad_cam": _grad_cam,
    "grad_cam(layercam)": lambda c: _grad_cam(c, "layercam"),
    "occlusion": lambda c: api("occlusion")(c.model, c.x[:2], 0, patch=16),
    "randomization_stages": lambda c: api("randomization_stages")(c.model),
    "cascading_randomization": _cascading,
    "randomisation_protocol": lambda c: api("randomisation_protocol")(
        c.model, c.explainer, c.x[:2], n_stages=2, baselines=["cam"]),
    "receptive_field_centres": lambda c: api("receptive_field_centres")(c.model, ["B4"], axes=(0,)),
    "predict_logits": lambda c: api("predict_logits")(c.model, c.x),
    "accuracy": lambda c: api("accuracy")(c.model, torch.utils.data.TensorDataset(c.x, c.y)),
    "ConceptViews.__init__": _concept_views,
    "save_checkpoint": lambda c: api("save_checkpoint")(c.tmp_path / "m.pt", c.model, {"seed": 0}),
    "model_device": lambda c: api("model_device")(c.model),
}

#: public names with a ``model`` argument that do not run it as a user's network, and why.
NOT_RUNNING: dict[str, str] = {
    "Explainer.__init__": "stores the model; fit/explain run it (in CALLS)",
    "Explainer.with_model": "a copy holding another network; runs nothing",
    "LogitsLevel.block_maps": "the logits level has no blocks: raises before running the model",
    "LogitsLevel.position_features": "the logits level has no positions: raises before running the model",
    "Profile.__init__": "'model' is the name of an architecture (a string)",
    "SeedData.__init__": "a record of one seed's fitted objects; runs nothing",
    "train_model": "trains the model: changing its weights is its purpose",
    "load_checkpoint": "loads weights into the model: its purpose",
    "load_state_dict_checked": "loads weights into the model: its purpose",
}

#: Explainer methods that run the model although they take no model argument (all in CALLS);
#: every other public Explainer method must be listed here as not running it.
EXPLAINER_NOT_RUNNING = {"with_model", "target_columns", "new_level_features", "fit_classifier"}


def _public_model_callables() -> set[str]:
    """Names (as in :func:`_public`) of every public callable with a ``model``/``network`` argument."""
    return {name for name, objs in _PUBLIC.items() if any(_takes_model(o) for o in objs)}


def test_every_public_function_taking_a_model_is_covered() -> None:
    found = _public_model_callables()
    assert len(found) > 30
    missing = sorted(found - set(CALLS) - set(NOT_RUNNING))
    assert not missing, (
        f"public callables that take a model are not checked by this test: {missing}; add a call to CALLS "
        "(or a reason to NOT_RUNNING)"
    )
    stale = sorted(k for k in (*CALLS, *NOT_RUNNING) if "(" not in k and k not in found
                   and not k.startswith("Explainer."))
    assert not stale, f"entries for names that no longer take a model: {stale}"
    Explainer = api("Explainer")
    methods = {k for k, v in vars(Explainer).items() if inspect.isfunction(v) and not k.startswith("_")}
    unchecked = sorted(m for m in methods - EXPLAINER_NOT_RUNNING if f"Explainer.{m}" not in CALLS)
    assert not unchecked, f"Explainer methods that may run the model but are not in CALLS: {unchecked}"


# ------------------------------------------------------------------ the check itself
def _set_mode(model: nn.Module, mode: str) -> None:
    if mode == "eval":
        model.eval()
    elif mode == "train":
        model.train()
    else:  # mixed: the stem and B2 train, B4's batch norm trains, the rest (dropout included) is in eval mode
        model.eval()
        model.conv1.train()
        model.layer2.train()
        model.layer4.bn.train()
        model.fc[0].train(False)


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
               "_load_state_dict_pre_hooks")


def _snapshot(model: nn.Module) -> dict[str, Any]:
    from torch.nn.modules import module as tm

    return {
        "training": [(n, m.training) for n, m in model.named_modules()],
        "tensors": {k: (v.detach().clone(), v.dtype, v.device) for k, v in
                    [*model.named_parameters(), *model.named_buffers()]},
        "requires_grad": [(k, p.requires_grad) for k, p in model.named_parameters()],
        "grads": [(k, p.grad is None) for k, p in model.named_parameters()],
        "hooks": [(n, d, len(getattr(m, d, {}))) for n, m in model.named_modules() for d in _HOOK_DICTS],
        "global_hooks": (len(tm._global_forward_hooks), len(tm._global_forward_pre_hooks),
                         len(tm._global_backward_hooks)),
    }


def _assert_unchanged(before: dict[str, Any], model: nn.Module, what: str) -> None:
    after = _snapshot(model)
    flips = [(n, a, b) for (n, a), (_, b) in zip(before["training"], after["training"]) if a != b]
    assert not flips, f"{what}: train/eval flags changed (module, before, after): {flips[:5]}"
    assert before["tensors"].keys() == after["tensors"].keys(), f"{what}: parameters or buffers added/removed"
    changed = [k for k, (v, dt, dev) in before["tensors"].items()
               if not (after["tensors"][k][1] == dt and after["tensors"][k][2] == dev
                       and torch.equal(after["tensors"][k][0], v))]
    assert not changed, f"{what}: parameters/buffers changed: {changed[:6]}"
    assert before["requires_grad"] == after["requires_grad"], f"{what}: requires_grad flags changed"
    assert before["grads"] == after["grads"], f"{what}: a .grad was written on the parameters"
    assert before["hooks"] == after["hooks"], f"{what}: hooks left on the model"
    assert before["global_hooks"] == after["global_hooks"], f"{what}: global hooks left"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("mode", ["eval", "train", "mixed"])
@pytest.mark.parametrize("name", list(CALLS))
def test_the_model_is_left_exactly_as_found(name: str, mode: str, tmp_path) -> None:
    model = _model()
    c = Ctx(model, tmp_path)
    call = CALLS[name]
    if name != "Explainer.fit":
        c.explainer  # noqa: B018 - the fitted objects a call needs, built in eval mode before the mode under test
    _set_mode(model, mode)
    before = _snapshot(model)
    if name == "eval_mode":
        with api("eval_mode")(model):
            assert not any(m.training for m in model.modules())
    else:
        call(c)
    _assert_unchanged(before, model, f"{name} [{mode}]")


def test_a_frozen_model_stays_frozen() -> None:
    """requires_grad=False parameters (a frozen backbone) stay frozen through Grad-CAM and fit."""
    grad_cam = next(f for f in _PUBLIC["grad_cam"] if "block" in inspect.signature(f).parameters)
    model = _model()
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    before = _snapshot(model)
    grad_cam(model, _data()[0][:2], 0)
    Ctx(model, None).explainer  # noqa: B018
    _assert_unchanged(before, model, "frozen")


def test_the_check_can_fail() -> None:
    """The snapshot sees a flipped flag, a forward pass in training mode, a gradient and a hook."""
    sabotage = {
        "flag": lambda m, x: m.layer3.train(),
        "batch statistics": lambda m, x: m.train()(x),
        "gradient": lambda m, x: m(x).sum().backward(),
        "hook": lambda m, x: m.layer1.register_forward_hook(lambda *a: None),
        "frozen": lambda m, x: m.fc[1].weight.requires_grad_(False),
    }
    for what, act in sabotage.items():
        model, x = _model(), _data()[0][:2]
        before = _snapshot(model)
        act(model, x)
        with pytest.raises(AssertionError):
            _assert_unchanged(before, model, what)
