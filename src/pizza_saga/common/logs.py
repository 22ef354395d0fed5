"""Log lines of long-running processes: text, or one JSON object per line.

JSON lines carry, where they apply, the workflow and activity the SDK's loggers attach to
each record (``temporal_workflow``, ``temporal_activity``), the business key a workflow id
stands for (the order number), the saga step and the attempt. Card numbers are masked in
either format (see logmask.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import temporalio.activity
import temporalio.workflow

from pizza_saga.common.logmask import install_card_masking, mask_card_numbers

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"

STEP_EXTRA = "saga_step"
ATTEMPT_EXTRA = "saga_attempt"
"""``extra`` keys a log call may set to name the saga step and attempt it is about (the
saga engine's compensation logs do)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and what it is about.

    ``business_key`` maps a workflow id to the key it stands for (None if it is not one of
    ours); its value is logged under ``key_name``.
    """

    def __init__(
        self,
        *,
        business_key: Callable[[str], str | None] = lambda _: None,
        key_name: str = "business_key",
    ) -> None:
        super().__init__()
        self._business_key = business_key
        self._key_name = key_name

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_card_numbers(record.getMessage()),
        }
        workflow = getattr(record, "temporal_workflow", None)
        activity = getattr(record, "temporal_activity", None)
        about: dict[str, Any] = {}
        if isinstance(workflow, dict):
            about.update(
                workflow_id=workflow.get("workflow_id"),
                run_id=workflow.get("run_id"),
                workflow_type=workflow.get("workflow_type"),
                task_queue=workflow.get("task_queue"),
            )
        if isinstance(activity, dict):
            activity_id = str(activity.get("activity_id", ""))
            about.update(
                workflow_id=activity.get("workflow_id"),
                run_id=activity.get("workflow_run_id"),
                workflow_type=activity.get("workflow_type"),
                task_queue=activity.get("task_queue"),
                activity_type=activity.get("activity_type"),
                activity_id=activity_id,
                # A saga step's activity id is its name, a compensation's "step:compensation:N".
                step=activity_id.split(":", 1)[0] or None,
                attempt=activity.get("attempt"),
            )
        step, attempt = getattr(record, STEP_EXTRA, None), getattr(record, ATTEMPT_EXTRA, None)
        if step is not None:
            about["step"] = step
        if attempt is not None:
            about["attempt"] = attempt
        workflow_id = about.get("workflow_id")
        if workflow_id:
            about[self._key_name] = self._business_key(str(workflow_id))
        line.update({k: v for k, v in about.items() if v is not None})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = mask_card_numbers(record.exc_text)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(
    log_format: Literal["text", "json"],
    *,
    business_key: Callable[[str], str | None] = lambda _: None,
    key_name: str = "business_key",
) -> None:
    """Log INFO and above to stderr in ``log_format``, card numbers masked."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(business_key=business_key, key_name=key_name))
        # The workflow and activity details are fields of the line: not in the message too.
        temporalio.workflow.logger.workflow_info_on_message = False
        temporalio.activity.logger.activity_info_on_message = False
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    install_card_masking(root)
