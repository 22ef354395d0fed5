"""Before deploying: would this version's code carry on the orders Temporal holds?

A new version's workers replay each running order's history with the new code. A change
that makes the code take another path than the history recorded (non-determinism), or that
makes a payload the old code wrote unreadable (a renamed field, an argument type changed, an
activity renamed or removed, a key dropped from the ring), breaks those orders mid-way.
`ReplayCheck` downloads the histories of the running orders and of those closed lately, or
reads history files, reads every payload with this version's types (order/compat.py) and
replays each history with this version's workflows, as a worker of this deployment would:
every order that would break, and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from pizza_saga.order.compat import CodeTypes, read_history
from pizza_saga.order.service.errors import (
    HistoryFileError,
    InvalidInput,
    ReplayFailed,
    TemporalUnavailable,
)
from pizza_saga.order.workflow import WORKFLOW_ID_PREFIX, WORKFLOW_TYPE

FETCH_CONCURRENCY = 8
"""Histories downloaded at once."""
MAX_REASON = 300
"""Characters of a replay failure's message kept: one line, not a dump."""

_CLOSED = {
    "workflow_execution_completed_event_attributes": "COMPLETED",
    "workflow_execution_failed_event_attributes": "FAILED",
    "workflow_execution_canceled_event_attributes": "CANCELED",
    "workflow_execution_terminated_event_attributes": "TERMINATED",
    "workflow_execution_timed_out_event_attributes": "TIMED_OUT",
    "workflow_execution_continued_as_new_event_attributes": "CONTINUED_AS_NEW",
}
"""A history's last event -> the run's status, as Temporal names it."""

_SDK_WORKFLOW_LOGGER = "temporalio.worker._workflow"
"""Where the SDK logs each failed workflow task, with its traceback."""


class Breakage(StrEnum):
    """Why an order would break on this version."""

    NON_DETERMINISM = "non_determinism"
    """The code takes another path than the history recorded."""
    UNREADABLE_PAYLOAD = "unreadable_payload"
    """A payload of the history does not decrypt, or does not decode into today's types."""
    REPLAY_FAILED = "replay_failed"
    """Replaying failed otherwise (the workflow task raised)."""


_SAYS = {
    Breakage.NON_DETERMINISM: "non-determinism: ",
    Breakage.UNREADABLE_PAYLOAD: "cannot read ",
    Breakage.REPLAY_FAILED: "replay failed: ",
}


@dataclass(frozen=True)
class OrderReplay:
    """One run checked, and what would become of it on this version."""

    workflow_id: str
    run_id: str
    status: str
    """The run's status as Temporal names it: RUNNING, COMPLETED, FAILED, CANCELED, ..."""
    file: str | None = None
    """The history file it came from (None: downloaded from Temporal)."""
    breakage: Breakage | None = None
    reason: str | None = None
    """What breaks, in one line (None when nothing does)."""

    @property
    def ok(self) -> bool:
        return self.breakage is None

    @property
    def order_number(self) -> str | None:
        """The order the run is (None: a workflow that is no order's)."""
        if self.workflow_id.startswith(WORKFLOW_ID_PREFIX):
            return self.workflow_id.removeprefix(WORKFLOW_ID_PREFIX)
        return None

    @property
    def verdict(self) -> str:
        """What breaks, as one reads it: "non-determinism: ..." or "cannot read ..."."""
        if self.breakage is None:
            return "replays"
        return f"{_SAYS[self.breakage]}{self.reason}"


@dataclass(frozen=True)
class ReplayReport:
    """Every run checked; ``not_checked`` more matched but were past the limit."""

    orders: tuple[OrderReplay, ...]
    not_checked: int = 0

    @property
    def broken(self) -> list[OrderReplay]:
        return [order for order in self.orders if not order.ok]

    @property
    def running(self) -> int:
        return sum(1 for order in self.orders if order.status == "RUNNING")


@dataclass(frozen=True)
class _Candidate:
    history: WorkflowHistory
    run_id: str
    status: str
    file: str | None = None


class ReplayCheck:
    """Replays orders' histories against this version's code (see the module's docstring).

    ``replayer`` runs this version's workflows as a worker of the deployment does (its
    workflow runner and data converter); ``converter`` is that data converter, ``types``
    what this version reads payloads as; ``client`` the Temporal whose orders on
    ``task_queue`` are checked (None: history files only).
    """

    def __init__(
        self,
        *,
        replayer: Replayer,
        converter: DataConverter,
        types: CodeTypes,
        client: Client | None,
        task_queue: str,
    ) -> None:
        self._replayer = replayer
        self._converter = converter
        self._types = types
        self._client = client
        self.task_queue = task_queue

    async def recent(
        self, *, since: timedelta, limit: int, now: datetime | None = None
    ) -> ReplayReport:
        """The running orders of the task queue, and those closed within ``since``, at most
        ``limit`` of them (running ones first, then the newest closed), each checked.

        Raises TemporalUnavailable if Temporal does not answer or refuses.
        """
        if self._client is None:
            raise TemporalUnavailable("this check was built without a Temporal client")
        client = self._client
        cutoff = (now or datetime.now(UTC)) - since
        base = f"TaskQueue = '{self.task_queue}' AND WorkflowType = '{WORKFLOW_TYPE}'"
        queries = (
            f"{base} AND ExecutionStatus = 'Running'",
            f"{base} AND CloseTime > '{cutoff.strftime('%Y-%m-%dT%H:%M:%SZ')}'",
        )
        listed: dict[str, tuple[str, str]] = {}  # run id -> (workflow id, status)
        try:
            matched = 0
            for query in queries:
                matched += (await client.count_workflows(query)).count
                if len(listed) >= limit:
                    continue
                async for execution in client.list_workflows(query, limit=limit - len(listed)):
                    status = execution.status.name if execution.status else "RUNNING"
                    listed.setdefault(execution.run_id, (execution.id, status))
            candidates = await self._download(client, listed)
        except RPCError as err:
            raise TemporalUnavailable(f"Temporal did not answer: {err.message}") from None
        orders = await self._check(candidates)
        return ReplayReport(orders=tuple(orders), not_checked=max(0, matched - len(listed)))

    async def files(self, directory: Path) -> ReplayReport:
        """Every history file (``*.json``, as `temporal workflow show --output json` or
        WorkflowHistory.to_json writes them) in ``directory``, each checked.

        Raises InvalidInput if there are none, HistoryFileError for a file that is no history.
        """
        candidates = await asyncio.to_thread(_history_files, directory)
        return ReplayReport(orders=tuple(await self._check(candidates)))

    async def _download(
        self, client: Client, listed: dict[str, tuple[str, str]]
    ) -> list[_Candidate]:
        """The histories of the runs listed, in their order; a run gone meanwhile
        (retention) is left out."""
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def fetch(run_id: str, workflow_id: str, status: str) -> _Candidate | None:
            async with gate:
                handle = client.get_workflow_handle(workflow_id, run_id=run_id)
                try:
                    history = await handle.fetch_history()
                except RPCError as err:
                    if err.status is RPCStatusCode.NOT_FOUND:
                        return None
                    raise
            return _Candidate(history, run_id, status)

        fetched = await asyncio.gather(*(fetch(run, *rest) for run, rest in listed.items()))
        return [candidate for candidate in fetched if candidate is not None]

    async def _check(self, candidates: Sequence[_Candidate]) -> list[OrderReplay]:
        """Each candidate's verdict, in their order: its payloads read with this version's
        types, then, if they all can be, its history replayed."""
        verdicts: list[OrderReplay | None] = []
        to_replay: list[tuple[int, _Candidate]] = []
        for candidate in candidates:
            reads = await read_history(candidate.history, self._converter, self._types)
            unreadable = [read for read in reads if read.problem is not None]
            if unreadable:
                reason = str(unreadable[0])
                if len(unreadable) > 1:
                    reason += f" (and {len(unreadable) - 1} more)"
                verdicts.append(_verdict(candidate, Breakage.UNREADABLE_PAYLOAD, reason))
            else:
                to_replay.append((len(verdicts), candidate))
                verdicts.append(None)
        async for index, failure in self._replay([candidate for _, candidate in to_replay]):
            position, candidate = to_replay[index]
            if failure is None:
                verdicts[position] = _verdict(candidate)
            elif isinstance(failure, NondeterminismError):
                verdicts[position] = _verdict(
                    candidate, Breakage.NON_DETERMINISM, _failure_text(failure)
                )
            else:
                verdicts[position] = _verdict(
                    candidate, Breakage.REPLAY_FAILED, _failure_text(failure)
                )
        return [verdict for verdict in verdicts if verdict is not None]

    async def _replay(
        self, candidates: Sequence[_Candidate]
    ) -> AsyncIterator[tuple[int, Exception | None]]:
        """Each candidate's replay failure (None: it replayed), by its index."""
        if not candidates:
            return

        async def histories() -> AsyncIterator[WorkflowHistory]:
            for candidate in candidates:
                yield candidate.history

        index = 0
        try:
            with _sdk_task_failures_unlogged():
                async with self._replayer.workflow_replay_iterator(histories()) as results:
                    async for result in results:
                        yield index, result.replay_failure
                        index += 1
        except Exception as err:  # the replayer itself stopped: no verdict for the rest
            raise ReplayFailed(f"the replay stopped: {_failure_text(err)}") from None


def _verdict(
    candidate: _Candidate, breakage: Breakage | None = None, reason: str | None = None
) -> OrderReplay:
    return OrderReplay(
        workflow_id=candidate.history.workflow_id,
        run_id=candidate.run_id,
        status=candidate.status,
        file=candidate.file,
        breakage=breakage,
        reason=reason,
    )


def _history_files(directory: Path) -> list[_Candidate]:
    """The histories in ``directory``'s ``*.json`` files, by file name."""
    if not directory.is_dir():
        raise InvalidInput(f"{directory} is not a directory", field="histories")
    paths = sorted(directory.glob("*.json"))
    if not paths:
        raise InvalidInput(f"no history files (*.json) in {directory}", field="histories")
    candidates = []
    for path in paths:
        history = _history_file(path)
        candidates.append(_Candidate(history, history.run_id, _status_of(history), file=str(path)))
    return candidates


def _history_file(path: Path) -> WorkflowHistory:
    """The history in ``path``, under the workflow id its first event names."""
    try:
        parsed: Any = json.loads(path.read_text(encoding="utf-8"))
        started = parsed["events"][0]["workflowExecutionStartedEventAttributes"]
        workflow_id = started["workflowId"]
        if not isinstance(workflow_id, str) or not workflow_id:
            raise ValueError("its first event names no workflow id")
        history = WorkflowHistory.from_json(workflow_id, parsed)
        _ = history.run_id  # raises RuntimeError if the first event is no start
    except OSError as err:
        raise HistoryFileError(path, f"cannot read it: {err.strerror}") from None
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as err:
        detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise HistoryFileError(path, f"not a workflow history ({_one_line(detail)})") from None
    return history


def _status_of(history: WorkflowHistory) -> str:
    last = history.events[-1].WhichOneof("attributes") if history.events else None
    return _CLOSED.get(last or "", "RUNNING")


def _failure_text(err: BaseException) -> str:
    """A replay failure's message, not the SDK core's dump of the failure around it."""
    text = str(err)
    found = re.search(r'message: "((?:[^"\\]|\\.)*)"', text)
    if found and found.group(1) != "Encoded failure":
        text = found.group(1)
    elif found:  # the failure's message is encrypted: its type is what can be shown
        kind = re.search(r'r#type: "([^"]*)"', text)
        text = f"the workflow task failed ({kind.group(1) if kind else 'unknown error'})"
    return _one_line(text)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


@contextlib.contextmanager
def _sdk_task_failures_unlogged() -> Iterator[None]:
    """While replaying, the SDK's log of each failed workflow task (with its traceback) is
    off: each failure is a verdict of the check, reported by it, not an error of the process."""
    logger = logging.getLogger(_SDK_WORKFLOW_LOGGER)
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before
