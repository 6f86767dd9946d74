"""schemathesis against the fine-tuning routes' OpenAPI spec, over real HTTP: no server errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import schemathesis

from serve_support import fuzz_operations, running_server
from tuneforge.config.serve_schema import ServeConfig
from tuneforge.service.api import add_service_routes
from tuneforge.service.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = 30  # per operation


@pytest.mark.slow
def test_no_input_the_files_and_jobs_spec_allows_makes_a_server_error(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    runtime = Runtime.load(REPO / "examples" / "service.yaml", [f"service.root={tmp_path}"])
    upload = tmp_path / "tickets.jsonl"
    upload.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')

    def extend(app) -> None:
        add_service_routes(app, runtime)

    with running_server(tiny_model_dir, ServeConfig(), extend=extend) as (url, ctx):
        import httpx

        with open(upload, "rb") as handle:  # one real file and job for the id routes to find
            file = httpx.post(
                f"{url}/v1/files", files={"file": handle}, data={"purpose": "fine-tune"}
            ).json()
        job = httpx.post(
            f"{url}/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file["id"]}
        ).json()
        assert job["status"] == "validating_files"
        from tuneforge.serve.app import create_app

        spec_app = create_app(ctx)
        add_service_routes(spec_app, runtime)
        spec = spec_app.openapi()
        paths = {
            path for path in spec["paths"] if path.startswith(("/v1/files", "/v1/fine_tuning"))
        }
        assert len(paths) == 8
        turns = itertools.count()
        real = {"file_id": file["id"], "job_id": job["id"]}

        def prepare(case) -> None:
            if case.path_parameters and next(turns) % 2:  # half the cases hit real objects
                for name in set(real) & set(case.path_parameters):
                    case.path_parameters[name] = real[name]

        every = [
            result.ok() for result in schemathesis.openapi.from_dict(spec).get_all_operations()
        ]
        operations = [op for op in every if op.path.startswith(("/v1/files", "/v1/fine_tuning"))]
        seen = fuzz_operations(operations, url, EXAMPLES, prepare)
    assert len(seen) == 11  # every files and jobs operation
    assert any(200 in codes for codes in seen.values())
    assert {400, 404} & set().union(*seen.values())
