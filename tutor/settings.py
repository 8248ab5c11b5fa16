"""Service settings, read from the environment (prefix ``TUTOR_``) or a ``.env`` file.

``DATABASE_URL`` (or ``TUTOR_DATABASE_URL``) picks the database: a SQLite file by default,
PostgreSQL with ``postgresql+psycopg://user@host/db``. Outside ``development`` and ``test``
the settings refuse the default key pepper, so a production deployment cannot run with a
secret that is published in this repository.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .evidence import EvidenceRule

DEFAULT_PEPPER = "kt-tutor-development-pepper"
#: the recommendation policies' names (tutor.recommend.POLICIES is the registry; a test keeps
#: the two equal)
POLICIES = (
    "mixed",
    "target",
    "review",
    "curriculum",
    "skill-builder",
    "lowest-mastery",
    "random",
)
MASTERY_SCALES = ("reachable", "success")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUTOR_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = Field(
        "sqlite:///tutor.db",
        validation_alias=AliasChoices("DATABASE_URL", "TUTOR_DATABASE_URL"),
    )
    #: mixed into every API key hash (HMAC-SHA256); must be set outside development
    key_pepper: str = DEFAULT_PEPPER
    #: unknown learners / items in posted answers are created instead of answered with 404
    auto_create_learners: bool = False
    auto_create_items: bool = False
    #: request bodies above this many bytes get 413
    max_body_bytes: int = 2_000_000
    #: answers per request in a batch
    max_batch_answers: int = 1000
    #: answers timed more than this many seconds after the server's clock are refused (422):
    #: a far-future answer would turn every later answer of its learner into a late one
    max_future_seconds: float = Field(86400.0, ge=0)
    #: a request's late answers may replay at most this many stored answers in all (each
    #: late learner's history once): beyond it, 413 (split the request)
    max_replay_answers: int = Field(200_000, ge=1)
    #: requests per minute per API key; 0 switches rate limiting off
    rate_limit_per_minute: int = 0
    #: recommendation defaults (per-organisation settings override them)
    default_policy: Literal[
        "mixed", "target", "review", "curriculum", "skill-builder", "lowest-mastery", "random"
    ] = "mixed"
    target_success: float = Field(0.7, gt=0, lt=1)
    mastery_threshold: float = Field(0.8, gt=0, lt=1)
    #: what ``mastery_threshold`` is compared with: ``reachable`` = concept mastery on the
    #: range between a new learner and one who has just answered 3 in a row correctly
    #: (tutor.runtime.LoadedModel.scaled_mastery); ``success`` = mean predicted success
    mastery_scale: Literal["reachable", "success"] = "reachable"
    #: evidence-based mastery (tutor.evidence): a concept is mastered with at least this many
    #: of the learner's own answers and evidence mastery at or above ``mastery_threshold``
    mastery_min_answers: int = Field(3, ge=1, le=1000)
    #: struggling: this many own answers wrong in a row, or this many own answers without
    #: mastery (the recommender then steps back and at-risk names the concept)
    struggle_run: int = Field(3, ge=1, le=1000)
    struggle_answers: int = Field(8, ge=1, le=1000)
    #: at most this many questions on one concept per UTC day (ASSISTments' skill-builder
    #: limit); 0 = no cap
    concept_daily_cap: int = Field(10, ge=0, le=1000)
    review_threshold: float = Field(0.6, gt=0, lt=1)
    recent_exclusion: int = Field(5, ge=0)
    #: analytics: learners at risk (mean mastery of covered concepts below, a drop of at least
    #: ``risk_mastery_drop`` over the last ``risk_window_answers`` answers, inactivity in days)
    risk_low_mastery: float = Field(0.5, gt=0, lt=1)
    risk_mastery_drop: float = Field(0.1, gt=0, lt=1)
    risk_window_answers: int = Field(10, ge=1)
    risk_inactive_days: float = Field(14.0, gt=0)
    #: analytics: items flagged when observed success is this many standard errors from the
    #: prediction, with at least this many attempts
    item_flag_min_attempts: int = Field(20, ge=1)
    item_flag_z: float = Field(3.0, gt=0)
    #: analytics, small numbers: items are flagged only when at least this many learners
    #: answered them (a flag is a claim about the item), and a learning-curve point needs
    #: this many learners (it is drawn with its Wilson interval)
    item_flag_min_learners: int = Field(10, ge=1)
    curve_min_learners: int = Field(5, ge=1)
    #: analytics caches filled in the background at start-up and after a model is activated:
    #: this many of each organisation's largest groups (their answers run through the model
    #: once, so the first dashboard request is not the one that pays); 0 = off
    analytics_warmup_groups: int = Field(20, ge=0)
    #: loaded models kept in memory per process
    model_cache_size: int = Field(4, ge=1)
    #: SQLite busy timeout (seconds) while another writer holds the lock
    sqlite_timeout: float = 30.0
    #: requests a worker process runs at once (its thread pool; the rest wait their turn). A
    #: request is CPU work in Python under one lock (the GIL): more threads than a few only
    #: add switching, and the latency of all of them grows together
    request_threads: int = Field(2, ge=1, le=256)
    #: on PostgreSQL, run the hot routes (answers, next-items, mastery) on the event loop
    #: instead of a worker thread (``tutor.blocking``): saves the thread hand-off, 0.6-1 ms of
    #: CPU a request; anything slow (a catalogue build, a model load, a replay) still runs in
    #: a thread. Off by default: it needs the standard asyncio loop (under uvloop some
    #: requests wait seconds; ``tutor serve`` picks it) and connections spread over the
    #: workers by ``tutor serve``'s supervisor, and even then a worker idles through each
    #: database round trip (one run at 16 connections: 344 req/s, neither worker busy), see
    #: the README. SQLite
    #: always uses threads (a writer may wait for the database lock)
    inline_hot_routes: bool = False
    #: database connections per process and pool (PostgreSQL; as many again may overflow
    #: under bursts). Reads (GET) and writes have a pool each: the reads' connections stay
    #: in autocommit, so no request switches a connection's mode and back
    pool_size: int = Field(10, ge=1)
    #: test each pooled connection with a round trip before use (PostgreSQL). Off: a
    #: connection that died (database restart) fails one request with 503, the pool is then
    #: invalidated and the next request reconnects
    pool_pre_ping: bool = False
    #: authenticated API keys are remembered per process for this many seconds (0 = off): a
    #: key revoked elsewhere (the CLI, another worker) stops working at most this long after;
    #: deleting a learner or a group through the API forgets this process's keys at once
    auth_cache_seconds: float = Field(30.0, ge=0)
    #: after a worker's start-up (models and catalogues loaded), move every object built so
    #: far out of the cyclic garbage collector's reach (``gc.freeze``) and collect the young
    #: generation every ``gc_young_threshold`` allocations instead of Python's 700: with a
    #: 50,000-item catalogue a worker holds ~365,000 objects, and each full collection over
    #: them stopped it for 170-230 ms (the p99 of a load); off in a process that builds many
    #: apps (tests), whose frozen objects would never be collected
    gc_freeze: bool = True
    gc_young_threshold: int = Field(10_000, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if self.environment == "production" and self.key_pepper == DEFAULT_PEPPER:
            raise ValueError(
                "TUTOR_KEY_PEPPER is the published development default; set a secret of your own "
                "in production"
            )
        return self


def org_setting(org: Any, settings: Settings | None, name: str, default: Any = None) -> Any:
    """A setting in effect for an organisation (anything with a ``settings`` dict, as an
    :class:`~tutor.db.Organisation` row): its own value, else the service's (``settings``,
    where given and it has one), else ``default``."""
    value = (getattr(org, "settings", None) or {}).get(name)
    if value is None and settings is not None:
        value = getattr(settings, name, None)
    return default if value is None else value


def evidence_rule(org_settings: dict | None, settings: Settings) -> EvidenceRule:
    """The mastery criterion of an organisation: its overrides, else the service's settings."""
    own = org_settings or {}

    def get(key: str) -> object:
        return own.get(key, getattr(settings, key))

    return EvidenceRule(
        mastery_threshold=float(get("mastery_threshold")),
        min_answers=int(get("mastery_min_answers")),
        struggle_run=int(get("struggle_run")),
        struggle_answers=int(get("struggle_answers")),
        daily_cap=int(get("concept_daily_cap")),
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
