"""schemathesis against the server's OpenAPI spec, through real HTTP: no server errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from serve_support import running_server
from tuneforge.config.serve_schema import ServeConfig
from tuneforge.serve.app import create_app

EXAMPLES = 25  # per operation; each may generate up to the request timeout


@pytest.mark.slow
def test_no_input_the_spec_allows_makes_a_server_error(tiny_model_dir: Path) -> None:
    settings_ = ServeConfig(request_timeout_s=2, max_queue=8, cache={"enabled": False})
    with running_server(tiny_model_dir, settings_) as (url, ctx):
        spec = create_app(ctx).openapi()
        schema = schemathesis.openapi.from_dict(spec)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12
        seen: dict[str, set[int]] = {}
        for operation in operations:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(operation.as_strategy())
            def check(case) -> None:
                response = case.call(base_url=url, timeout=30)
                seen.setdefault(case.operation.label, set()).add(response.status_code)
                assert response.status_code < 500, (case.operation.label, response.text[:300])

            check()
    assert seen  # every operation was called
    assert any(200 in codes for codes in seen.values())
