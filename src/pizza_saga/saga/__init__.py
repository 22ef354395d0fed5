"""A generic saga engine for Temporal workflows.

Knows nothing about pizzas: any workflow can run its side-effecting activities as saga
steps, each with a compensating activity registered before the step runs.
"""

from pizza_saga.saga.engine import Saga, SagaOptions
from pizza_saga.saga.ledger import CompensationState, StepRecord, StepState

__all__ = ["CompensationState", "Saga", "SagaOptions", "StepRecord", "StepState"]
