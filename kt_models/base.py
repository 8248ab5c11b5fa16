"""The interface every knowledge-tracing model implements, checkpoints and the registry.

Two ways of running a model, which must agree to 1e-5 (tested for every model):

* training and evaluation: :meth:`KTModel.forward` on a padded :class:`~kt_models.data.Batch`
  returns logits ``[B, T]`` where position ``t`` predicts the answer at ``t`` from the
  answers ``0 .. t-1`` only;
* serving: :meth:`KTModel.init_state` for ``n`` learners, :meth:`KTModel.step` to add one
  answer per learner (O(1) in the history length), and :meth:`KTModel.predict` for the
  success probability of any items, optionally at a later time (``at_time``, in days on the
  same clock as ``step``'s times) for models that forget.

Times are in days. Datasets without a clock use the step index as time (one unit per answer).
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Batch, Vocab
from .registry import MODELS, model_modules

CHECKPOINT_VERSION = 1

State = Any
#: :meth:`KTModel.numpy_step`'s function: (state leaves, item, correct, time) -> new leaves
NumpyStep = Callable[[list[np.ndarray], int, int, float], list[np.ndarray]]


class CheckpointError(Exception):
    """A checkpoint that cannot be used: truncated, of an unknown model, or mismatched."""


@dataclass
class ModelConfig:
    """Options shared by every model; each model extends it."""

    seed: int = 42


class KTModel(nn.Module):
    """Base class: a next-answer predictor with an incremental (serving) form."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: whether ``predict(..., at_time=...)`` changes with time (the model forgets)
    forgets: ClassVar[bool] = False
    #: whether predictions tell apart the items of one concept (an item-level model); for a
    #: concept-level model the service adds item difficulty estimated from the data. This and
    #: ``concept_level`` are a model's defaults: an option may change them per instance
    #: (``items='rasch'``, :mod:`kt_models.items`), so read them on the model, not the class
    item_aware: ClassVar[bool] = False
    #: whether predictions depend on an item only through its set of concepts (no item
    #: term at all): the service then predicts once per distinct concept set instead of once
    #: per item (``tutor.runtime.ConceptSets``); a model with any per-item parameter (PSI-KT's
    #: and BKT's difficulties, the logistic model) leaves it False
    concept_level: ClassVar[bool] = False
    #: whether the logits are an affine function of :meth:`readout_features` (the same for
    #: every time ``at_time``): ``predict_logits(state, items) == feature_logits(
    #: readout_features(state), items)``, affine in the features. A server may then
    #: precompute, once per model, a matrix and offset per item, so that a prediction over
    #: thousands of items is one matrix product (``tutor.runtime.LoadedModel``)
    affine_readout: ClassVar[bool] = False
    #: for an item-aware model whose prediction of an item depends on the item only through
    #: its concepts and one scalar difficulty (:meth:`item_difficulties`), and whose
    #: prediction per item is costly: how many items of each concept set a server predicts
    #: for the concepts' mastery, the others read off by linear interpolation in the
    #: difficulty (``tutor.runtime.ConceptSets``); 0: every item (exact). Predictions of
    #: the items themselves (recommendations) are always the model's own
    mastery_nodes: ClassVar[int] = 0
    #: the Adam learning rate ``tutor train`` uses unless told otherwise
    default_lr: ClassVar[float] = 2e-3
    #: the Adam L2 weight decay ``tutor train`` uses unless told otherwise
    default_weight_decay: ClassVar[float] = 0.0

    def __init__(self, config: ModelConfig, vocab: Vocab) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        self.register_buffer(
            "item_concepts",
            torch.as_tensor(vocab.item_concepts, dtype=torch.long),
            persistent=False,
        )

    # ------------------------------------------------------------------ training form
    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        """Mean binary cross-entropy over the predicted positions (t >= 1), plus the item
        difficulties' penalty of an item-aware option (:meth:`item_penalty`)."""
        m = prediction_mask(batch)
        bce = F.binary_cross_entropy_with_logits(logits[m], batch.correct[m])
        return bce + self.item_penalty(batch)

    def item_penalty(self, batch: Batch) -> torch.Tensor | float:
        """The regulariser of the model's Rasch items (``items='rasch'``,
        :class:`kt_models.items.RaschItems`) over ``batch``; 0 without them."""
        rasch = getattr(self, "rasch", None)
        return 0.0 if rasch is None else rasch.penalty(batch)

    # ------------------------------------------------------------------ serving form
    def init_state(self, n: int) -> State:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(
        self, state: State, item: torch.Tensor, correct: torch.Tensor, time: torch.Tensor | None
    ) -> State:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_logits(
        self, state: State, items: torch.Tensor, at_time: torch.Tensor | None = None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def numpy_step(self) -> NumpyStep | None:
        """One learner's :meth:`step` on numpy arrays, for serving, or None (the default: the
        server calls :meth:`step`). The function takes the state's leaves (the tensors of a
        one-learner state in their order, as float32 arrays), the answer's item, 0/1 and time,
        and returns the new leaves: the same numbers as :meth:`step` to float32 rounding. It
        holds a copy of the weights: ask again after they change.

        Why: a server folds one answer into one state per request, a handful of tiny tensor
        operations whose cost is torch's per-call machinery, not arithmetic, and in a request
        that machinery runs with caches other code has just emptied (DKT's step: 0.10 ms in
        a loop, 0.29 ms inside the service; numpy's smaller calls 0.01 ms and about 0.1
        ms cold, 2026-12-07)."""
        return None

    def readout_features(self, state: State) -> torch.Tensor:
        """The features ``[n, F]`` of the ``n`` learners' states that the logits are affine
        in (models with :attr:`affine_readout`)."""
        raise NotImplementedError(f"{self.name} has no affine readout")

    def feature_logits(self, features: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, m]`` of items ``[n, m]`` from :meth:`readout_features` ``[n, F]``
        (models with :attr:`affine_readout`)."""
        raise NotImplementedError(f"{self.name} has no affine readout")

    @torch.no_grad()
    def predict(
        self, state: State, items: torch.Tensor, at_time: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Success probabilities ``[n, m]`` of items ``[n, m]`` for the ``n`` learners."""
        return torch.sigmoid(self.predict_logits(state, items, at_time))

    def item_difficulties(self) -> np.ndarray | None:
        """The scalar difficulty of every model item ``[n_items + 1]`` where the model's
        predictions depend on an item only through its concepts and that number (see
        :attr:`mastery_nodes`), else None."""
        return None

    def compile_training(self) -> bool:
        """Compile the training form's per-step code with ``torch.compile``
        (``TrainConfig.compile``), for a model whose forward loops over time steps in Python
        with many small operations; whether it did. The serving form stays as it is."""
        return False

    # ------------------------------------------------------------------ helpers
    def concept_mask(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Concept indices ``[..., K]`` of items and their validity mask."""
        c = self.item_concepts[items]
        return c, c > 0

    # ------------------------------------------------------------------ capabilities
    # What a model may offer beyond predictions, declared here with "none" defaults so that
    # callers ask instead of probing attributes: a model overrides the ones it has.
    #: whether :meth:`learner_traits` gives per-learner traits
    has_traits: ClassVar[bool] = False

    def multi_step_logits(self, batch: Batch, n: int) -> torch.Tensor | None:
        """Logits ``[B, T]`` of the ``n``-step protocol in one pass, where the model has a
        faster form than the serving loop of :func:`kt_models.predictions.predict_multi_step`
        (position ``p >= n`` predicted after the answers before ``n * (p // n)``, as ``predict``
        does after ``step`` through them; positions before ``n`` are not read). None: use the
        loop."""
        return None

    def concept_vectors(self) -> torch.Tensor | None:
        """One vector per concept (rows 1..C) for the curriculum designer, if the model has."""
        return None

    def prerequisite_graph(self) -> torch.Tensor | None:
        """``[C, C]`` learned prerequisite probabilities (``[i, j]``: concept ``i + 1`` is a
        prerequisite of ``j + 1``), if the model learns a graph."""
        return None

    def learner_traits(self, state: State) -> dict[str, torch.Tensor] | None:
        """Per-learner traits ``{name: [n]}`` of a state, if the model has traits."""
        return None

    def item_parameters(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The model's own per-item difficulty and discrimination (``[n_items + 1]`` each,
        logit scale), where it has such parameters."""
        return None, None

    def state_select(self, state: State, index: torch.Tensor) -> State:
        """The states of some learners (used to batch serving requests).

        The default indexes the first axis of every tensor; a model whose state has another
        layout (an LSTM's ``[layers, n, H]``) overrides it.
        """
        return _map_state(state, lambda t: t[index] if t.dim() > 0 else t, dim_first=True)


def prediction_mask(batch: Batch) -> torch.Tensor:
    """Positions that are predicted and scored: real answers after each learner's first."""
    m = batch.mask.clone()
    m[:, 0] = False
    return m


def _map_state(state: State, fn: Any, dim_first: bool = True) -> State:
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(s, fn, dim_first) for s in state)
    if isinstance(state, dict):
        return {k: _map_state(v, fn, dim_first) for k, v in state.items()}
    return state


# ---------------------------------------------------------------------- registry
REGISTRY: dict[str, type[KTModel]] = {}


def register(cls: type[KTModel]) -> type[KTModel]:
    """Class decorator: file the model under its ``name``, which must be listed in
    :data:`kt_models.registry.MODELS` with this module (the one list of models)."""
    listed = MODELS.get(cls.name)
    module = cls.__module__.rsplit(".", 1)[-1]
    if listed is None or listed[0] != module:
        raise TypeError(
            f"model {cls.name!r} ({cls.__module__}) is not listed under module {module!r} "
            "in kt_models.registry.MODELS"
        )
    REGISTRY[cls.name] = cls
    return cls


def _ensure_registered() -> None:
    import importlib

    for mod in model_modules():
        importlib.import_module(f"kt_models.{mod}")


def get_model_class(name: str) -> type[KTModel]:
    _ensure_registered()
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None


def make_config(name: str, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The model's default config with ``overrides`` applied (strings parsed by field type)."""
    cls = get_model_class(name)
    cfg = cls.config_class()
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for k, v in (overrides or {}).items():
        if k not in fields:
            raise KeyError(
                f"model {name!r} has no option {k!r} (options: {', '.join(sorted(fields))})"
            )
        current = getattr(cfg, k)
        setattr(cfg, k, _coerce(v, current, k))
    return cfg


def _coerce(v: Any, current: Any, key: str) -> Any:
    if not isinstance(v, str):
        return v
    try:
        if isinstance(current, bool):
            if v.lower() in ("1", "true", "yes", "on"):
                return True
            if v.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(v)
        if isinstance(current, int):
            return int(v)
        if isinstance(current, float):
            return float(v)
    except ValueError:
        raise ValueError(f"option {key!r} expects {type(current).__name__}, got {v!r}") from None
    return v


def build_model(name: str, vocab: Vocab, config: ModelConfig | None = None) -> KTModel:
    cls = get_model_class(name)
    return cls(config or cls.config_class(), vocab)


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(
    model: KTModel,
    path: Path | str,
    *,
    manifest: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Weights, config, vocabularies and the training data manifest, written atomically."""
    path = Path(path)
    payload = {
        "format_version": CHECKPOINT_VERSION,
        "model": model.name,
        # plain data only (JSON types), so that loading needs no unpickling of objects
        "config": plain_data(asdict(model.config)),
        "vocab": plain_data(model.vocab.to_dict()),
        "vocab_fingerprint": model.vocab.fingerprint(),
        "vocab_sizes": {"items": model.vocab.n_items, "concepts": model.vocab.n_concepts},
        "manifest": plain_data(manifest or {}),
        "state_dict": model.state_dict(),
        "extra": plain_data(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def plain_data(obj: Any) -> Any:
    """``obj`` as JSON-like plain data (dicts, lists, str, int, float, bool, None): what a
    checkpoint stores beside tensors (numpy scalars and arrays, paths, versions become plain
    values), so that it loads with ``weights_only=True``."""
    return json.loads(json.dumps(obj, default=_plain_default))


def _plain_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    return str(o)


def read_checkpoint(
    source: Path | str | bytes,
    map_location: str | torch.device = "cpu",
    *,
    remedy: str | None = None,
) -> dict[str, Any]:
    """A checkpoint's payload, loaded with ``weights_only=True``: tensors and plain data only,
    never an arbitrary object (a crafted file cannot run code here). Checkpoints written
    before their metadata was plain data held ``torch.__version__`` objects
    (``TorchVersion``, a ``str``), which are allowed too. :class:`CheckpointError` otherwise,
    naming the file, the global it refused (if any) and, with ``remedy``, what to do."""
    is_file = not isinstance(source, bytes)
    name = str(source) if is_file else "checkpoint"
    label = Path(source).name if is_file else "it"
    tail = f"; {remedy}" if remedy else ""
    if is_file and not Path(source).is_file():
        raise CheckpointError(f"{name}: checkpoint not found{tail}")
    from torch.torch_version import TorchVersion

    f = source if is_file else io.BytesIO(source)
    try:
        with torch.serialization.safe_globals([TorchVersion]):
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler refused the file
        refused = _REFUSED_GLOBAL.search(str(exc))
        what = (
            f"{label} holds an object that loading would have to run code to build: "
            f"{refused.group(1) or refused.group(2)}; refused"
            if refused is not None
            else f"corrupt, or holding what the safe loader refuses: {_torch_reason(exc)}"
        )
        raise CheckpointError(f"{name}: not a plain-data checkpoint ({what}){tail}") from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        raise CheckpointError(
            f"{name}: not a readable checkpoint ({label} is truncated or corrupt: "
            f"{_torch_reason(exc)}){tail}"
        ) from exc


#: How torch's weights-only unpickler names a global it refuses (an allowlist miss, or a
#: module it blocks outright).
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)|unsupported GLOBAL (\S+)")

#: Lines of torch's loading errors that advise rather than say what went wrong.
_TORCH_ADVICE = ("Weights only load failed", "(1)", "(2)", "Check the documentation")


def _torch_reason(exc: BaseException) -> str:
    """What a torch loading error says went wrong, in at most 200 characters: the weights-only
    unpickler's own reason without the advice around it, else the first line of the message,
    else the exception's type."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        text = " ".join(text.split())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(_TORCH_ADVICE)] or lines
    return (lines[0] if lines else type(exc).__name__)[:200]


def load_checkpoint(
    path: Path | str | bytes, map_location: str | torch.device = "cpu"
) -> tuple[KTModel, dict[str, Any]]:
    """The model of a checkpoint (a file, or its bytes) and the checkpoint's other fields;
    clear errors otherwise. Loading never unpickles arbitrary objects (:func:`read_checkpoint`)."""
    payload = read_checkpoint(path, map_location)
    path = "checkpoint" if isinstance(path, bytes) else Path(path)
    if not isinstance(payload, dict) or "model" not in payload or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a kt-tutor checkpoint (no model/state_dict)")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload.get('format_version')}, expected "
            f"{CHECKPOINT_VERSION}"
        )
    try:
        cls = get_model_class(payload["model"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: {exc.args[0]}") from exc
    vocab = Vocab.from_dict(payload["vocab"])
    sizes = payload.get("vocab_sizes") or {}
    q = vocab.item_concepts
    if (
        sizes.get("items", vocab.n_items) != vocab.n_items
        or sizes.get("concepts", vocab.n_concepts) != vocab.n_concepts
        or q.shape[0] != vocab.n_items + 1
        or (q.size and int(q.max()) > vocab.n_concepts)
    ):
        raise CheckpointError(
            f"{path}: vocabulary mismatch: {vocab.n_items} items and {vocab.n_concepts} concepts "
            f"(item-concept matrix {tuple(q.shape)}), but the model was trained with "
            f"{sizes.get('items')} items and {sizes.get('concepts')} concepts"
        )
    if payload.get("vocab_fingerprint") not in (None, vocab.fingerprint()):
        raise CheckpointError(f"{path}: vocabulary mismatch: ids differ from the ones trained on")
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    cfg_dict = {k: v for k, v in payload["config"].items() if k in known}
    config = cls.config_class(**cfg_dict)
    model = cls(config, vocab)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit a {payload['model']} model with this vocabulary "
            f"({len(vocab.items)} items, {len(vocab.concepts)} concepts): {str(exc)[:300]}"
        ) from exc
    model.to(map_location)
    model.eval()
    return model, payload
