"""A worker interceptor that checks how many arguments a workflow was started with.

Any client can start a workflow with any number of arguments. Without this check, a count
the run method does not take is a TypeError in the SDK, a workflow-task failure that Temporal
retries forever: the run hangs. With it, the run fails at once with a non-retryable error
saying what the workflow takes. Knows nothing of any particular workflow.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

WORKFLOW_ARGUMENT_ERROR = "WorkflowArgumentError"
"""Error type of a workflow started with arguments it cannot run with."""

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def argument_error(message: str) -> ApplicationError:
    """The non-retryable error a workflow fails with when its arguments are unusable."""
    return ApplicationError(message, type=WORKFLOW_ARGUMENT_ERROR, non_retryable=True)


def argument_count_problem(run_fn: Callable[..., Any], count: int) -> str | None:
    """What is wrong with starting ``run_fn`` (an unbound run method) with ``count``
    arguments, as "takes 1 argument (request: OrderRequest); it was started with 0"; None if
    nothing is."""
    params = list(inspect.signature(run_fn).parameters.values())[1:]  # after self
    positional = [p for p in params if p.kind in _POSITIONAL]
    least = sum(1 for p in positional if p.default is inspect.Parameter.empty)
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    most = None if variadic else len(positional)
    if least <= count and (most is None or count <= most):
        return None
    if most is None:
        takes = f"at least {least}"
    elif least == most:
        takes = str(least)
    else:
        takes = f"{least} to {most}"
    plural = "" if (least if most is None else most) == 1 else "s"
    names = ", ".join(_described(p) for p in positional)
    return f"takes {takes} argument{plural} ({names}); it was started with {count}"


def _described(param: inspect.Parameter) -> str:
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return param.name
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    return f"{param.name}: {name or annotation}"


class WorkflowArgumentCheck(Interceptor):
    """Fails a run started with an argument count its run method does not take."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _CheckedWorkflow


class _CheckedWorkflow(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        problem = argument_count_problem(input.run_fn, len(input.args))
        if problem is not None:
            raise argument_error(f"{workflow.info().workflow_type} {problem}")
        return await super().execute_workflow(input)
