"""Schemathesis against the app's own OpenAPI schema, on SQLite and PostgreSQL, with an
admin, a teacher, a learner and an ingest key (the key is drawn with each example), with
valid and invalid requests (Schemathesis' positive and negative modes): no response is a
server error, and every response matches the schema. Bounded to fit the suite:
``FUZZ_EXAMPLES`` examples per operation (default 25; raise it for a deeper run, e.g.
``FUZZ_EXAMPLES=200``). Every operation is run, and the failures of all of them reported."""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
ROLES = ("admin", "teacher", "learner", "ingest")


def test_no_server_error_and_responses_match_the_schema(client, world):
    for k, (item, ok) in enumerate([("i0", 1), ("i1", 0), ("i5", 1), ("i6", 0)]):
        body = {"event_id": f"seed{k}", "learner_id": "u0", "item_id": item, "correct": ok}
        r = client.post("/v1/answers", json=body, headers=world.headers("ingest"))
        assert r.status_code == 201, r.text
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    failures: list[str] = []
    operations = 0
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1

        cases = st.one_of(
            op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=cases, role=st.sampled_from(ROLES))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case, role):  # noqa: ANN001, ANN202
            response = case.call(headers={"Authorization": f"Bearer {world.keys[role]}"})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collected: every operation runs
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    print("fuzz:", operations, "operations", dict(sorted(statuses.items())))
    assert operations > 30
    # the requests reached the routes: successes, refusals and validation errors all seen
    assert statuses.get(200, 0) and statuses.get(422, 0) and statuses.get(403, 0), statuses
    assert not failures, "\n\n".join(failures)
