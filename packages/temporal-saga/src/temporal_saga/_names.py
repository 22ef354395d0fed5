"""Names of activities and compensations, as the ledger shows them.

The SDK offers no public call that gives an ``@activity.defn`` callable's activity type. It
records the definition on the callable; `activity_name` reads it where it is, and otherwise
falls back to what the SDK names an activity by default (the callable's ``__name__``). The
package's tests check that the first way still works on the SDK installed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from temporalio import activity


def activity_name(fn: Callable[..., Any] | str) -> str:
    """The activity type Temporal uses for ``fn`` (an ``@activity.defn`` callable, or a name)."""
    if isinstance(fn, str):
        return fn
    definition = getattr(activity, "_Definition", None)
    from_callable = getattr(definition, "from_callable", None)
    if from_callable is not None:
        defn = from_callable(fn)
        if defn is None:
            raise TypeError(f"{fn!r} is not an @activity.defn activity")
        name = getattr(defn, "name", None)
        if isinstance(name, str):
            return name
    return str(getattr(fn, "__name__", fn))


_SCHEDULERS = {
    "execute_child_workflow",
    "start_child_workflow",
    "execute_activity",
    "start_activity",
    "execute_local_activity",
    "start_local_activity",
    "execute_activity_method",
    "execute_local_activity_method",
}
"""Workflow functions whose first argument names what actually compensates."""


def compensation_name(fn: Callable[..., Any], args: tuple[Any, ...] = ()) -> str:
    """A readable name for a compensation coroutine function, given its arguments.

    ``execute_child_workflow(RefundWorkflow.run, ...)``, directly or in a partial, is named
    after the workflow it starts (``execute_child_workflow(RefundWorkflow.run)``).
    """
    inner = fn
    targets = list(args)
    while isinstance(inner, functools.partial):
        targets = [*inner.args, *targets]
        inner = inner.func
    name = str(getattr(inner, "__qualname__", None) or getattr(inner, "__name__", repr(inner)))
    if getattr(inner, "__name__", None) in _SCHEDULERS and targets:
        target = targets[0]
        what = target if isinstance(target, str) else getattr(target, "__qualname__", target)
        return f"{inner.__name__}({what})"
    return name


def positional_arity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` takes when called (``self`` not counted).

    None when it takes any number (``*args``) or has no signature to read.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if _is_unbound_method(fn) and positional:
        positional = positional[1:]
    return len(positional)


def _is_unbound_method(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a function defined in a class (an activity method, called unbound)."""
    if inspect.ismethod(fn):
        return False
    parts = getattr(fn, "__qualname__", "").split(".")
    return len(parts) > 1 and parts[-2] != "<locals>"
