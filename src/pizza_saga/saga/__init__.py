"""A generic saga engine for Temporal workflows.

Knows nothing about pizzas: any workflow can run its side-effecting activities as saga
steps, each with a compensating activity registered before the step runs. See
docs/saga-engine.md.
"""

from pizza_saga.saga.engine import (
    COMPENSATION_ERROR,
    DEADLINE_ERROR,
    NEEDS_OPERATOR_ATTRIBUTE,
    Saga,
    SagaOptions,
)
from pizza_saga.saga.ledger import (
    CompensationContext,
    CompensationState,
    OperatorAction,
    OperatorDecision,
    StepOutcome,
    StepRecord,
    StepState,
)

__all__ = [
    "COMPENSATION_ERROR",
    "DEADLINE_ERROR",
    "NEEDS_OPERATOR_ATTRIBUTE",
    "CompensationContext",
    "CompensationState",
    "OperatorAction",
    "OperatorDecision",
    "Saga",
    "SagaOptions",
    "StepOutcome",
    "StepRecord",
    "StepState",
]
