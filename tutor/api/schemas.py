"""Request and response bodies (pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=200, description="Client-supplied unique id")
    learner_id: str = Field(min_length=1, max_length=200)
    item_id: str = Field(min_length=1, max_length=200)
    correct: int = Field(description="1 for a correct answer, 0 otherwise")
    timestamp: datetime | None = Field(None, description="When answered (default: received)")
    elapsed_ms: int | None = Field(None, ge=0)
    attempt: int | None = Field(None, ge=0, le=32767)

    @field_validator("correct", mode="before")
    @classmethod
    def _binary(cls, v: Any) -> int:
        if isinstance(v, bool):
            return int(v)
        if v in (0, 1) and not isinstance(v, float | str):
            return int(v)
        raise ValueError("correct must be 0 or 1")

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamp must carry a time zone (e.g. 2024-01-01T10:00:00Z)")
        return v


class AnswerBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answers: list[AnswerIn] = Field(min_length=1)


class ConceptMastery(BaseModel):
    concept_id: str
    name: str = ""
    mastery: float | None = Field(
        description="Mean predicted success over the concept's items (null: unknown to the model)"
    )
    reachable: float | None = Field(
        None,
        description=(
            "The same mastery on the reachable range: 0 = a new learner, 1 = a learner who "
            "has just answered 3 in a row correctly (what mastery_scale='reachable' compares "
            "with the mastery threshold)"
        ),
    )


class ModelRef(BaseModel):
    id: int
    name: str
    forgets: bool | None = None


class AnswerResult(BaseModel):
    event_id: str
    learner_id: str
    item_id: str
    correct: int
    timestamp: str
    model: ModelRef | None
    mastery: list[ConceptMastery]
    replayed: bool


class AnswerBatchResult(BaseModel):
    results: list[AnswerResult]


class Mastery(BaseModel):
    learner_id: str
    model: ModelRef
    at: str | None
    n_answers: int
    concepts: list[ConceptMastery]


class HistoryAnswer(BaseModel):
    event_id: str
    item_id: str
    correct: int
    timestamp: str
    elapsed_ms: int | None
    attempt: int | None
    source: str


class History(BaseModel):
    learner_id: str
    total: int
    offset: int
    answers: list[HistoryAnswer]


class Recommendation(BaseModel):
    item_id: str
    predicted_success: float
    concepts: list[str]
    policy: Literal["target", "review", "curriculum"]
    reason: str


class NextItems(BaseModel):
    learner_id: str
    policy: str
    target: float
    model: ModelRef
    prerequisites: str = Field(description="organisation, learned by the model, or none")
    prerequisites_relaxed: bool
    items: list[Recommendation]


class CurriculumStepOut(BaseModel):
    position: int
    concept_id: str
    name: str
    score_gain: float | None
    prerequisites: list[str]
    reason: str
    mastery: float | None
    mastered: bool


class CurriculumOut(BaseModel):
    scope: str
    method: str
    score: float | None
    prerequisites: str
    steps: list[CurriculumStepOut]
