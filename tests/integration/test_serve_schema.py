"""schemathesis against the server's OpenAPI spec, through real HTTP: no server errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis

from serve_support import fuzz_operations, running_server
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
        seen = fuzz_operations(operations, url, EXAMPLES)
    assert seen  # every operation was called
    assert any(200 in codes for codes in seen.values())
