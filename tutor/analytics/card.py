"""The active model's card (:func:`model_card`): what it was trained on, how it scored, its
calibration, and for PSI-KT the learned prerequisite graph and a summary of the learners'
traits (the static part cached per database and model)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..catalogue import concept_label
from ..db import LearnerState, ModelVersion, Organisation
from ..runtime import decode_many
from ..service import NotFound
from .cache import _CARD
from .context import _Context, _context
from .values import _iso, _json_safe, _rnd

#: the learned prerequisite graph's edges shown on the model card
GRAPH_EDGE_THRESHOLD = 0.5


def model_card(session: Session, *, org: Organisation) -> dict[str, Any]:
    """The active model: what it was trained on, how it scored, its calibration, and for
    PSI-KT the learned prerequisite graph and a summary of the learners' traits."""
    ctx = _context(session, org)
    model = ctx.model
    mv = session.get(ModelVersion, model.model_id)
    if mv is None:
        raise NotFound(f"model {model.model_id} not found")
    static = _CARD.get((ctx.scope, mv.id))
    if static is None:
        static = _CARD.put((ctx.scope, mv.id), _static_card(session, ctx, mv))
    traits = None
    if model.model.has_traits:
        traits = _traits_summary(session, ctx)
    return {**static, "traits": traits}


def _no_paths(v: Any) -> Any:
    """The model card without the server's file paths (teachers read it): the run's ``data``
    and the dataset's ``source`` become their last component (the dataset's name)."""
    if isinstance(v, dict):
        return {k: _basename(x) if k == "data" else x for k, x in v.items()}
    return _basename(v)


def _basename(v: Any) -> Any:
    if isinstance(v, str) and ("/" in v or "\\" in v) and "://" not in v:
        return v.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return v


def _static_card(session: Session, ctx: _Context, mv: ModelVersion) -> dict[str, Any]:
    model = ctx.model
    info = mv.info or {}
    blob = session.scalar(select(ModelVersion.checkpoint).where(ModelVersion.id == mv.id))
    payload: dict[str, Any] = {}
    if blob:
        from kt_models.base import read_checkpoint

        payload = read_checkpoint(blob)
    manifest = payload.get("manifest") or {}
    extra = payload.get("extra") or {}
    vocab = model.model.vocab
    training = {
        "run": _no_paths(info.get("run")),
        "time_unit": model.time_unit,
        "dataset": {
            "format": manifest.get("format"),
            "source": _no_paths(manifest.get("source")),
            "created_at": manifest.get("created_at"),
            "counts": manifest.get("counts"),
        }
        if manifest
        else None,
        "vocabulary": {"items": vocab.n_items, "concepts": vocab.n_concepts},
        "checkpoint_epoch": extra.get("epoch"),
        "validation": extra.get("valid"),
    }
    results = info.get("results") or {}
    metrics = None
    if results:
        metrics = {
            "subset": results.get("subset"),
            "protocol": results.get("protocol"),
            "learners": results.get("learners"),
            "test": results.get("test"),
            "multi_step": results.get("multi_step"),
        }
    graph = None
    learned = model.model.prerequisite_graph()
    if learned is not None:
        p = learned.cpu().numpy()
        names = {c: ctx.cat.name(k) for k, c in enumerate(ctx.cat.concept_ext)}
        src, dst = np.nonzero(p > GRAPH_EDGE_THRESHOLD)
        order = np.argsort(-p[src, dst], kind="stable")
        graph = {
            "threshold": GRAPH_EDGE_THRESHOLD,
            "nodes": [
                {"concept_id": c, "name": names.get(c) or concept_label(c, "")}
                for c in model.concept_ids
            ],
            "edges": [
                {
                    "source": model.concept_ids[int(src[k])],
                    "target": model.concept_ids[int(dst[k])],
                    "probability": _rnd(p[src[k], dst[k]]),
                }
                for k in order.tolist()
            ],
        }
    return _json_safe(
        {
            "model": {
                "id": mv.id,
                "name": mv.name,
                "label": mv.label,
                "created_at": _iso(mv.created_at),
                "sha256": mv.sha256,
                "forgets": model.forgets,
            },
            "training": training,
            "metrics": metrics,
            "calibration": results.get("calibration"),
            "prerequisite_graph": graph,
        }
    )


def _traits_summary(session: Session, ctx: _Context, max_learners: int = 10_000) -> dict:
    """Mean, spread and quantiles of the learners' posterior traits (PSI-KT), over the
    stored states of the organisation's learners for this model (up to ``max_learners``)."""
    model = ctx.model
    width = sum(nb for _, _, nb in model._layout)
    blobs = [
        b
        for b in session.scalars(
            select(LearnerState.state)
            .where(LearnerState.model_id == model.model_id, LearnerState.n_applied > 0)
            .order_by(LearnerState.learner_id)
            .limit(max_learners)
        )
        if len(b) == width
    ]
    prior = {
        k: _rnd(v)
        for k, v in zip(
            ("alpha", "mu", "sigma", "gamma"),
            (float(x) for x in model.model.traits(model.model.trait_prior.detach())),
            strict=True,
        )
    }
    out: dict[str, Any] = {"learners": len(blobs), "prior": prior}
    if blobs:
        traits = model.model.learner_traits(decode_many(model, blobs))
        for name, v in traits.items():
            a = v.detach().cpu().numpy().astype(np.float64)
            q = np.quantile(a, [0.1, 0.5, 0.9])
            out[name] = {
                "mean": _rnd(a.mean()),
                "sd": _rnd(a.std()),
                "p10": _rnd(q[0]),
                "median": _rnd(q[1]),
                "p90": _rnd(q[2]),
            }
    return out
