"""The published OpenAPI schema says what the API accepts: schemathesis generates requests from it, valid and
invalid, and sends them to a real API process with the dev tenant's key (an admin, so every operation is reached).

Per operation it checks that no answer is a 5xx, that every status is documented and every documented body matches
its schema, that schema-valid requests are accepted (or refused only for what a schema cannot know: a name that
does not exist, a key without the right, a conflict), and that schema-invalid requests are refused.

The API is the module's own (own port, home and Redis database, a chat wait of a fraction of a second and no
worker), so the jobs, files, batches and contracts the fuzzer creates touch no other test. Bounded in time:
FUZZ_EXAMPLES cases per operation and mode, about a minute on two cores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway_core.settings import Settings
from tests.helpers import FleetEnv, RedisDatabases
from tests.integration.own_api import KEY, OwnApi, own_api

FUZZ_EXAMPLES = 25
FLEET_PROMPT_CHARS = 5000  # FEDGATE_MAX_PROMPT_CHARS of the session's fleet (tests/conftest.py), which the API inherits
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, positive_data_acceptance,
          negative_data_rejection]


@pytest.fixture(scope="module")
def fuzzed_api(fleet: FleetEnv, redis_databases: RedisDatabases, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[OwnApi]:
    with own_api(fleet, tmp_path_factory.mktemp("fuzz-home"), redis_databases.url(),
                 FEDGATE_CHAT_TIMEOUT_S="0.2", FEDGATE_MAX_WAIT_S="0.2") as api:
        yield api


def published_schema() -> dict[str, Any]:
    """The schema the API publishes at /openapi.json, built in-process with the fuzzed API's settings (it depends on
    settings, e.g. FEDGATE_MAX_PROMPT_CHARS, not on Redis or the config)."""
    from gateway_api.app import create_app

    return create_app(Settings(max_prompt_chars=FLEET_PROMPT_CHARS)).openapi()


schema = schemathesis.openapi.from_dict(published_schema())


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_the_api_answers_what_its_schema_says(case: schemathesis.Case, fuzzed_api: OwnApi) -> None:
    case.call_and_validate(base_url=fuzzed_api.url, headers={"authorization": f"Bearer {KEY}"}, checks=CHECKS)


def test_the_schema_fuzzed_is_the_one_the_api_publishes(fuzzed_api: OwnApi) -> None:
    with fuzzed_api.client() as client:
        assert client.get("/openapi.json").json() == published_schema()
