"""Rows as OpenAI's objects: file, fine_tuning.job, its events and checkpoints, list pages."""

from __future__ import annotations

from typing import Any

from tuneforge.serve.registry import fine_tuned_name

RESULTS_PURPOSE = "fine-tune-results"


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def job_object(row: dict[str, Any]) -> dict[str, Any]:
    spec = row["spec"]
    method = spec["method"]
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "error": row["error"],
        "fine_tuned_model": row["fine_tuned_model"],
        "hyperparameters": method[method["type"]]["hyperparameters"],
        "method": method,
        "model": spec["model"],
        "organization_id": row["tenant"] or "org-local",
        "result_files": row["result_files"],
        "seed": spec["seed"],
        "status": row["status"],
        "trained_tokens": row["trained_tokens"],
        "training_file": spec["training_file"],
        "validation_file": spec["validation_file"],
        "user_provided_suffix": spec["suffix"],
        "metadata": spec["metadata"],
        "estimated_finish": None,
        "integrations": None,
    }


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.event",
        "created_at": row["created_at"],
        "level": row["level"],
        "message": row["message"],
        "type": row["type"],
        "data": row["data"] or {},
    }


def checkpoint_object(row: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    spec = job["spec"]
    name = fine_tuned_name(spec["model"], spec["suffix"], job["id"])
    return {
        "id": row["id"],
        "object": "fine_tuning.job.checkpoint",
        "created_at": row["created_at"],
        "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{row['step']}",
        "fine_tuning_job_id": job["id"],
        "metrics": row["metrics"],
        "step_number": row["step"],
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
