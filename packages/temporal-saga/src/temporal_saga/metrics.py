"""What the saga engine counts: steps, rollbacks, compensations and how long rollbacks take.

Recorded with `workflow.metric_meter()`, so a replayed workflow task counts nothing again;
every series carries the SDK's ``workflow_type``, ``namespace`` and ``task_queue`` labels.
The names below are those of the meter; a Prometheus exporter adds ``_total`` to counters
and ``_seconds`` to the duration (see README.md, section Metrics).
"""

from __future__ import annotations

from enum import StrEnum

from temporalio import workflow

from temporal_saga.ledger import StepState

STEPS = "saga_steps"
"""Counter of forward steps that ended, by ``step`` and ``outcome`` (succeeded, failed,
cancelled)."""
ROLLBACKS = "saga_rollbacks"
"""Counter of sagas that rolled back, by ``reason``."""
COMPENSATIONS = "saga_compensations"
"""Counter of compensation results, by ``step`` and ``result``."""
COMPENSATION_ATTEMPTS = "saga_compensation_attempts"
"""Counter of compensation activities run (operator retries included), by ``step``."""
ROLLBACK_DURATION = "saga_rollback_duration"
"""Histogram (seconds) of workflow time from the failure to the last compensation settled
(compensated or skipped, operator waits included), by ``reason``."""

ROLLBACK_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Bucket bounds (seconds) for ROLLBACK_DURATION; give them to the metrics exporter."""
HISTOGRAM_BUCKETS = {ROLLBACK_DURATION: ROLLBACK_DURATION_BUCKETS}
"""The engine's histograms and their bucket bounds."""


class RollbackReason(StrEnum):
    """Why a saga rolled back."""

    FAILURE = "failure"
    CANCELLATION = "cancellation"
    DEADLINE = "deadline"


class CompensationResult(StrEnum):
    """What became of one compensation attempt or decision.

    Every attempt is exactly one of COMPENSATED, RETRIED (failed, another follows after
    the backoff), NEEDS_OPERATOR or FAILED (failed, attempts used up); SKIPPED is an operator's
    decision, not an attempt.
    """

    COMPENSATED = "compensated"
    RETRIED = "retried"
    NEEDS_OPERATOR = "needs_operator"
    SKIPPED = "skipped"
    FAILED = "failed"
    """Failed every attempt, and the saga raises instead of waiting for an operator."""


def step_ended(step: str, state: StepState) -> None:
    """Count a forward step that ended (succeeded, failed or cancelled)."""
    workflow.metric_meter().create_counter(
        STEPS, "Saga steps that ended, by step and outcome."
    ).add(1, {"step": step, "outcome": state.value.lower()})


def rollback_started(reason: RollbackReason) -> None:
    """Count a saga that rolls back."""
    workflow.metric_meter().create_counter(ROLLBACKS, "Sagas that rolled back, by reason.").add(
        1, {"reason": reason.value}
    )


def rollback_finished(reason: RollbackReason, seconds: float) -> None:
    """Record how long a rollback took, from the failure to its last compensation."""
    workflow.metric_meter().create_histogram_float(
        ROLLBACK_DURATION,
        "Time from a saga's failure to its last compensation settled.",
        "seconds",
    ).record(seconds, {"reason": reason.value})


def compensation_attempted(step: str) -> None:
    """Count one compensation attempt of ``step``."""
    workflow.metric_meter().create_counter(
        COMPENSATION_ATTEMPTS, "Compensation attempts, by step."
    ).add(1, {"step": step})


def compensation_result(step: str, result: CompensationResult) -> None:
    """Count what became of a compensation attempt or operator decision of ``step``."""
    workflow.metric_meter().create_counter(
        COMPENSATIONS, "Compensation results, by step and result."
    ).add(1, {"step": step, "result": result.value})
