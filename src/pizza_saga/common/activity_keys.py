"""Idempotency keys for activities that change the world."""

from __future__ import annotations

from temporalio import activity


def workflow_key() -> str:
    """The running activity's workflow id: the key its side effects are recorded under.

    Stable across retries, worker crashes and resets (the run id is not), and one order
    is one workflow id, so each store records at most one change of each kind per key.
    """
    workflow_id = activity.info().workflow_id
    if workflow_id is None:
        raise RuntimeError("this activity records side effects per workflow; run it from one")
    return workflow_id
