"""OpenAI's files and fine-tuning jobs routes, added to the serving app.

The app's guard has already checked the API key (when keys are set) and put its
tenant on the request; every read and change here is the tenant's own: another key's
file or job answers 404, as one that does not exist.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.serve.handlers import ApiError
from tuneforge.service import objects
from tuneforge.service.ids import is_id
from tuneforge.service.runtime import Runtime

UPLOAD_PURPOSES = ("fine-tune",)
_SUFFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
CHUNK = 1 << 20


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(_Body):
    n_epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=50)] = "auto"
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Literal["auto"] | Annotated[float, Field(gt=0, le=10)] = "auto"
    beta: Literal["auto"] | Annotated[float, Field(gt=0, le=10)] = "auto"


class MethodBody(_Body):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(_Body):
    type: Literal["supervised", "dpo"]
    supervised: MethodBody | None = None
    dpo: MethodBody | None = None


class CreateJob(_Body):
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None  # the older, top-level form
    method: Method | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None


def add_service_routes(app: FastAPI, runtime: Runtime) -> None:
    """The ``/v1/files`` and ``/v1/fine_tuning/jobs`` routes, on the runtime's store."""
    store, limits = runtime.store, runtime.settings.limits

    @app.post("/v1/files")
    async def upload(
        request: Request, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]
    ) -> dict[str, Any]:
        tenant = request.state.tenant
        if purpose not in UPLOAD_PURPOSES:
            raise ApiError(400, f"purpose {purpose!r}: this server takes 'fine-tune'", "purpose")
        kept = store.stored_bytes(tenant)
        body, digest = bytearray(), hashlib.sha256()
        while chunk := await file.read(CHUNK):
            body += chunk
            if len(body) > limits.max_file_bytes:
                raise ApiError(
                    413,
                    f"{file.filename}: above this server's limit of {limits.max_file_bytes:,} "
                    "bytes per file (service.limits.max_file_bytes)",
                    "file",
                    "file_too_large",
                )
        if kept + len(body) > limits.max_storage_bytes_per_key:
            raise ApiError(
                429,
                f"storage quota: this key keeps {kept:,} bytes of files; the limit is "
                f"{limits.max_storage_bytes_per_key:,}. Delete files first",
                "file",
                "quota_exceeded",
            )
        digest.update(body)
        filename = (file.filename or "upload.jsonl").replace("/", "_")[-255:]
        row = store.add_file(
            tenant,
            filename=filename,
            purpose=purpose,
            bytes=len(body),
            sha256=digest.hexdigest(),
            path="",
        )
        path = runtime.root / "files" / f"{row['id']}.jsonl"
        path.write_bytes(bytes(body))  # stored as data under a name we chose; never run
        store.set_file_path(row["id"], str(path))
        return objects.file_object(row)

    @app.get("/v1/files")
    async def list_files(request: Request, purpose: str | None = None) -> dict[str, Any]:
        rows = store.files_of(request.state.tenant, purpose)
        return objects.page([objects.file_object(r) for r in rows], False)

    @app.get("/v1/files/{file_id}")
    async def get_file(request: Request, file_id: str) -> dict[str, Any]:
        return objects.file_object(_file(request, file_id))

    @app.get("/v1/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> FileResponse:
        row = _file(request, file_id)
        return FileResponse(row["path"], filename=row["filename"])

    @app.delete("/v1/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
        row = store.delete_file(request.state.tenant, file_id)
        if row is None:
            raise _missing_file(file_id)
        if row["path"]:
            Path(row["path"]).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def _file(request: Request, file_id: str) -> dict[str, Any]:
        row = store.file(request.state.tenant, file_id) if is_id(file_id, "file") else None
        if row is None:
            raise _missing_file(file_id)
        return row

    @app.post("/v1/fine_tuning/jobs")
    async def create_job(request: Request, body: CreateJob) -> dict[str, Any]:
        tenant = request.state.tenant
        spec = resolve_spec(runtime, body)
        for param in ("training_file", "validation_file"):
            file_id = spec[param]
            if file_id is None:
                continue
            row = store.file(tenant, file_id) if is_id(file_id, "file") else None
            if row is None or row["purpose"] != "fine-tune":
                raise ApiError(
                    400,
                    f"{param} {file_id!r}: no such uploaded fine-tune file",
                    param,
                    "invalid_file",
                )
        if store.active_jobs(tenant) >= limits.max_active_jobs_per_key:
            raise ApiError(
                429,
                f"this key already has {limits.max_active_jobs_per_key} active jobs "
                "(service.limits.max_active_jobs_per_key); wait for one to finish",
                code="quota_exceeded",
            )
        return objects.job_object(store.create_job(tenant, spec))

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(
        request: Request,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        try:
            rows, more = store.jobs_of(request.state.tenant, after, limit)
        except KeyError:
            raise _missing_job(after or "") from None
        return objects.page([objects.job_object(r) for r in rows], more)

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    async def get_job(request: Request, job_id: str) -> dict[str, Any]:
        return objects.job_object(_job(request, job_id))

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
        job = _job(request, job_id)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            raise ApiError(
                400, f"job {job_id} is already {job['status']}", "job_id", "invalid_state"
            )
        row = store.request_cancel(request.state.tenant, job_id)
        return objects.job_object(row or job)

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def job_events(
        request: Request,
        job_id: str,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    ) -> dict[str, Any]:
        _job(request, job_id)
        rows, more = _page(store.events_of, job_id, after, limit, "event")
        return objects.page([objects.event_object(r) for r in rows], more)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def job_checkpoints(
        request: Request,
        job_id: str,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> dict[str, Any]:
        job = _job(request, job_id)
        rows, more = _page(store.checkpoints_of, job_id, after, limit, "checkpoint")
        return objects.page([objects.checkpoint_object(r, job) for r in rows], more)

    def _job(request: Request, job_id: str) -> dict[str, Any]:
        row = store.job(request.state.tenant, job_id) if is_id(job_id, "ftjob") else None
        if row is None:
            raise _missing_job(job_id)
        return row


def resolve_spec(runtime: Runtime, body: CreateJob) -> dict[str, Any]:
    """The job as it will run: the method with every ``auto`` replaced by its value.

    Raises:
        ApiError: 400 for a model this server cannot tune, a bad suffix or method.
    """
    if body.model != runtime.base_name:
        raise ApiError(
            400,
            f"model {body.model!r} cannot be fine-tuned here; this server tunes "
            f"{runtime.base_name!r}",
            "model",
            "model_not_available",
        )
    if body.suffix is not None and not _SUFFIX.fullmatch(body.suffix):
        raise ApiError(
            400, "suffix: up to 64 letters, digits, '_', '.' or '-'", "suffix", "invalid_suffix"
        )
    if body.integrations:
        raise ApiError(400, "integrations are not supported here", "integrations")
    method = body.method or Method(type="supervised")
    given = getattr(method, method.type) or MethodBody(
        hyperparameters=body.hyperparameters or Hyperparameters()
    )
    config, hyper = runtime.config, given.hyperparameters
    resolved: dict[str, Any] = {
        "n_epochs": _auto(hyper.n_epochs, max(1, round(config.train.epochs))),
        "batch_size": _auto(hyper.batch_size, config.train.batch_size),
        "learning_rate_multiplier": _auto(hyper.learning_rate_multiplier, 1.0),
    }
    if method.type == "dpo":
        resolved["beta"] = _auto(hyper.beta, config.preference.beta)
    elif hyper.beta != "auto":
        raise ApiError(400, "beta is a dpo hyper-parameter", "method.supervised.hyperparameters")
    return {
        "model": body.model,
        "training_file": body.training_file,
        "validation_file": body.validation_file,
        "method": {"type": method.type, method.type: {"hyperparameters": resolved}},
        "suffix": body.suffix,
        "seed": body.seed if body.seed is not None else config.seed,
        "metadata": body.metadata,
    }


def _page(fetch: Any, job_id: str, after: str | None, limit: int, what: str) -> Any:
    """A page from ``fetch(job_id, after, limit)``; 404 for an ``after`` not in the job."""
    try:
        return fetch(job_id, after, limit)
    except KeyError:
        raise ApiError(404, f"no {what} {after!r} in job {job_id}", "after") from None


def _auto(value: Any, default: Any) -> Any:
    return default if value == "auto" else value


def _missing_file(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", "file_id", "file_not_found")


def _missing_job(job_id: str) -> ApiError:
    return ApiError(
        404, f"No such fine-tuning job: {job_id}", "fine_tuning_job_id", "fine_tuning_job_not_found"
    )
