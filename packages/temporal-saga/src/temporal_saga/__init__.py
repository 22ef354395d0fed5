"""Sagas for Temporal Python workflows.

Run a workflow's side effects as saga steps, each with a compensation registered before the
step runs; on an error, a cancellation or the deadline, the compensations run, newest first
or all at once, shielded from cancellation, and the original error is re-raised::

    saga = Saga(SagaOptions(deadline=timedelta(minutes=30)))
    async with saga:
        car = await saga.execute_activity(book_car, trip, compensate_with=cancel_car,
                                          start_to_close_timeout=timedelta(seconds=10))
        await saga.execute_activity(charge, trip, kind=StepKind.PIVOT)

The activity side (an effect log that serializes a step with its compensation) is in
`temporal_saga.effects` (extra ``sqlalchemy``); test helpers in `temporal_saga.testing`.
"""

from temporal_saga._saga import (
    COMPENSATION_ERROR,
    DEADLINE_ERROR,
    MAX_REASON_LENGTH,
    NEEDS_OPERATOR_ATTRIBUTE,
    STEP_SKIPPED_ERROR,
    OnExhausted,
    Saga,
    SagaOptions,
    describe_failure,
)
from temporal_saga.ledger import (
    CompensationContext,
    CompensationState,
    OperatorAction,
    OperatorDecision,
    StepKind,
    StepOutcome,
    StepRecord,
    StepState,
)

__all__ = [
    "COMPENSATION_ERROR",
    "DEADLINE_ERROR",
    "MAX_REASON_LENGTH",
    "NEEDS_OPERATOR_ATTRIBUTE",
    "STEP_SKIPPED_ERROR",
    "CompensationContext",
    "CompensationState",
    "OnExhausted",
    "OperatorAction",
    "OperatorDecision",
    "Saga",
    "SagaOptions",
    "StepKind",
    "StepOutcome",
    "StepRecord",
    "StepState",
    "describe_failure",
]
