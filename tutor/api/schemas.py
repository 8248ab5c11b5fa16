"""Request and response bodies (pydantic) of every route but the xAPI ones, and the types of
the parameters several routes share (ids, pages, times)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, field_validator

#: ids (learners, items, concepts, groups, events): 1-200 characters, no control characters
#: (a NUL cannot be stored by PostgreSQL; none belongs in an id)
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
Id = Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)]
#: the times the service accepts anywhere (answers, ``at=``): 1970-01-01 .. 2200-01-01 UTC
#: (the answer path also refuses answers too far in the future: ``max_future_seconds``)
from ..service import TIME_MAX, TIME_MIN  # noqa: E402

#: the largest ``offset`` of a paged route (beyond it a page is empty anyway)
MAX_OFFSET = 10**9
#: concepts one item may link (the research data's items have a few; EdNet's at most 7)
MAX_ITEM_CONCEPTS = 100
#: an answer's elapsed time: at most a week, in milliseconds
ELAPSED_MS_MAX = 7 * 24 * 3600 * 1000


def bounded_time(v: datetime | None) -> datetime | None:
    """A time zone-aware instant between :data:`TIME_MIN` and :data:`TIME_MAX` (UTC)."""
    if v is None:
        return v
    if v.tzinfo is None:
        raise ValueError("a time must carry a time zone (e.g. 2024-01-01T10:00:00Z)")
    # compare before converting: 0001-01-01T00:00:00+01:00 has no UTC representation
    if not (TIME_MIN <= v <= TIME_MAX):
        raise ValueError(f"a time must lie between {TIME_MIN.date()} and {TIME_MAX.date()} (UTC)")
    return v.astimezone(UTC)


Time = Annotated[datetime, AfterValidator(bounded_time)]

# ---------------------------------------------------------------------- route parameters
#: an external id in a path (``/concepts/{concept_id}``...)
ExtId = Annotated[
    str, Path(min_length=1, max_length=200, pattern=ID_PATTERN, description="External id")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip")]
#: ``at``: the time of the estimates (models that forget move them with time)
AtQuery = Annotated[
    Time | None,
    Query(description="Mastery at this (future) time, for models that forget (ISO 8601)"),
]


def unstorable_text(doc: Any) -> str | None:
    """What keeps a parsed JSON document out of a database, in words (None: nothing): a key or
    string with a NUL character, or with a lone UTF-16 surrogate (``"\\ud800"`` parses, but
    cannot be written as UTF-8), or a number that is NaN or infinite (Python's JSON parser,
    which reads request bodies, accepts ``NaN`` and ``Infinity``; RFC 8259 has no such
    number, PostgreSQL refuses it and SQLite would keep it)."""
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if "\x00" in x:
                return "a string holds a NUL character"
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return "a string holds a lone UTF-16 surrogate"
        elif isinstance(x, float):
            if not math.isfinite(x):
                return f"a number is {x} (JSON numbers are finite)"
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return None


def storable_json(v: Any) -> Any:
    """Free JSON (item metadata...) whose keys and strings every database can store
    (:func:`unstorable_text`)."""
    why = unstorable_text(v)
    if why is not None:
        raise ValueError(why)
    return v


#: free text (names) every database can store: no NUL, no lone surrogate (:func:`storable_json`)
StorableText = Annotated[str, AfterValidator(storable_json)]


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: Id = Field(description="Client-supplied id, unique per learner")
    learner_id: Id
    item_id: Id
    correct: int = Field(description="1 for a correct answer, 0 otherwise")
    timestamp: Time | None = Field(
        None,
        description="When answered (default: received), 1970..2200 and at most "
        "max_future_seconds (a day) ahead",
    )
    elapsed_ms: int | None = Field(None, ge=0, le=ELAPSED_MS_MAX)
    attempt: int | None = Field(None, ge=0, le=32767)

    @field_validator("correct", mode="before")
    @classmethod
    def _binary(cls, v: Any) -> int:
        if isinstance(v, bool):
            return int(v)
        if v in (0, 1) and not isinstance(v, float | str):
            return int(v)
        raise ValueError("correct must be 0 or 1")


class AnswerBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answers: list[AnswerIn] = Field(min_length=1)


class ConceptMastery(BaseModel):
    """One concept of a learner: its status and the mastery the service reports and gates on
    (tutor.evidence)."""

    concept_id: str
    name: str = ""
    status: Literal["not_started", "estimated", "learning", "mastered", "struggling"] = Field(
        description="not_started / estimated (no own answers: inferred from other concepts) / "
        "learning / mastered (enough own answers at the mastery threshold) / struggling"
    )
    answers: int = Field(description="The learner's own answers on the concept")
    correct: int = Field(description="How many of them were correct")
    mastery: float | None = Field(
        description="Reported mastery: from the learner's own answers where there are any "
        "(never falls after a correct one, never rises after a wrong one), else the model's "
        "estimate (null: the concept is unknown to the model)"
    )
    estimate: float | None = Field(
        None,
        description="The model's estimate on the organisation's mastery scale (reachable: "
        "0 = a new learner, 1 = one who just answered 3 in a row correctly)",
    )
    predicted_success: float | None = Field(
        None, description="The model's mean predicted success over the concept's items"
    )
    basis: str = Field("", description="What the reported mastery rests on, in words")


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
    statuses: dict[str, int] = Field(description="How many concepts have each status")
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
    concept_names: list[str] = Field(default_factory=list)
    policy: str = Field(
        description="The rule that chose the item: continue, step-back, review, curriculum, "
        "target, or a baseline policy's name"
    )
    reason: str


class NextItems(BaseModel):
    learner_id: str
    policy: str
    target: float
    model: ModelRef
    prerequisites: str = Field(description="organisation, learned by the model, or none")
    prerequisites_relaxed: bool
    items: list[Recommendation]
    note: str | None = Field(None, description="Why the list is empty (null when it is not)")


class CurriculumStepOut(BaseModel):
    position: int
    concept_id: str
    name: str
    score_gain: float | None
    prerequisites: list[str]
    prerequisite_names: list[str] = Field(default_factory=list)
    reason: str = Field(description="What the step rests on")
    mastery: float | None
    mastered: bool
    status: str | None = Field(None, description="The learner's status (learner curricula)")


class CurriculumOut(BaseModel):
    scope: str
    method: str
    score: float | None
    prerequisites: str
    data_precedence_pairs: int = Field(
        0, description="Concept pairs ordered by the order most learners met them in the logs"
    )
    steps: list[CurriculumStepOut]


# ---------------------------------------------------------------------- administration
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Page(BaseModel):
    # the head of a page of a listing; its rows follow, under the resource's name (no
    # docstring: pydantic would give it to the pages' schemas as their description)
    total: int
    limit: int
    offset: int


class ConceptIn(_In):
    name: StorableText = Field("", max_length=500)
    level: float | None = Field(
        None,
        ge=-1000,
        le=1000,
        description="Teaching level, e.g. the school grade (lower is taught earlier): the "
        "curriculum designer orders by it",
    )


class ConceptOut(BaseModel):
    id: str
    name: str
    level: float | None = None
    items: int = Field(description="Items (active or not) linked to the concept")


class ConceptPage(_Page):
    concepts: list[ConceptOut]


class PrerequisiteIO(_In):
    prerequisite: Id = Field(description="Mastered first")
    concept: Id


class PrerequisiteOut(BaseModel):
    """A stored edge as it is answered: ids as stored (the input's bounds are not checked
    again on the way out, so an id imported by another path never turns a read into a 500)."""

    prerequisite: str = Field(description="Mastered first")
    concept: str


class ItemIn(_In):
    concepts: list[Id] = Field(default_factory=list, max_length=MAX_ITEM_CONCEPTS)
    metadata: Annotated[dict[str, Any], AfterValidator(storable_json)] = Field(
        default_factory=dict, description="Replaces the stored one"
    )
    active: bool = True


class ItemOut(BaseModel):
    id: str
    concepts: list[str]
    metadata: dict[str, Any]
    active: bool


class ItemPage(_Page):
    items: list[ItemOut]


class LearnerIn(_In):
    #: the display name teachers read in the dashboard and analytics (optional: without one
    #: they read the learner's id); ``display_name`` is accepted for it too
    name: StorableText = Field(
        "", max_length=200, validation_alias=AliasChoices("name", "display_name")
    )


class LearnerOut(BaseModel):
    id: str
    name: str
    n_answers: int
    first_seen: datetime | None
    created_at: datetime


class LearnerPage(_Page):
    learners: list[LearnerOut]


class GroupIn(_In):
    name: StorableText = Field("", max_length=200)


class GroupOut(BaseModel):
    id: str
    name: str
    n_members: int
    created_at: datetime


class GroupDetail(GroupOut):
    members: list[str] = Field(description="Learner ids, sorted")


class GroupPage(_Page):
    groups: list[GroupOut]


class ModelOut(BaseModel):
    id: int
    name: str
    label: str
    sha256: str
    created_at: datetime
    active: bool
    time_unit: str | None = None
    metrics: dict[str, float | None] | None = Field(
        None, description="Test metrics of the run's results.json, where it was evaluated"
    )
    states: int = Field(description="Learner states built for this version")


class RebuildOut(BaseModel):
    model_id: int
    learners: int = Field(description="Learner states rebuilt")
    skipped: int = Field(
        0,
        description="Learners who answered (or were deleted) while their batch was rebuilt: "
        "not written (the answer path keeps the active model's states current; a stale one "
        "is rebuilt at its learner's next request)",
    )


class OrganisationOut(BaseModel):
    id: int
    slug: str
    name: str
    active_model_id: int | None
    catalogue_version: int
    created_at: datetime
    settings: dict[str, Any] = Field(description="The organisation's overrides")
    effective_settings: dict[str, Any] = Field(description="Overrides over service defaults")
