"""Schemathesis against `conceal serve`'s OpenAPI spec: generated requests (bounded) never get a 5xx."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="conceal serve needs the serve extra: pip install 'conceal[serve]'")
schemathesis = pytest.importorskip("schemathesis", reason="the API fuzz test needs schemathesis (the dev extra)")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402


@pytest.fixture(scope="module")
def app(tiny_models):
    from conceal.service import Limits, create_app, load_models

    models = load_models([tiny_models[m] for m in ("concealer", "masker")])
    return create_app(models, Limits(max_upload_bytes=256 * 1024, max_pixels=250_000))


def test_no_server_errors(app):
    """Each operation of the spec, with up to 25 generated requests (bodies, fields, bytes that are no image)."""
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/health", "/v1/models", "/v1/apply"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_5xx(case):
            case.call_and_validate(checks=[not_a_server_error])

        no_5xx()
