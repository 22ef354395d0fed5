"""Reading a recorded run's payloads with this version's types.

A history holds what earlier versions of the code wrote: the workflow's input, each
activity's arguments and result, each update's arguments and result, failures. A worker of
this version reads them again when it replays a running order, retries one of its activities
or answers a query, and `pizza status` reads the results of finished ones. `read_history`
decodes each of them, through the product's data converter, as today's code would: the
workflow's input against its run method's parameter types, an activity's input against that
activity's current parameters (looked up by its name in the history), its result against its
return type. A renamed field, an argument type changed incompatibly, a renamed or removed
activity, a key no longer in the ring: each is a `Read` with its problem, naming what and
where.

The types come from the functions themselves (``typing.get_type_hints``): `CodeTypes` holds
them, by workflow type and activity name. An activity is registered under its function's
name (the product names none otherwise).
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from pizza_saga.common.logmask import mask_card_numbers

MAX_REASON = 300
"""Characters of a problem's text kept: one line, not a dump."""

LOCAL_ACTIVITY_MARKER = "core_local_activity"
"""The marker a local activity's result is recorded in (its other details are the SDK's)."""

_NOT_OURS = frozenset({"header", "search_attributes", "memo"})
"""Fields that hold no payload of the product's: headers (the SDK's, not encoded), search
attributes (never encrypted: Temporal indexes them) and memos (the product sets none)."""


@dataclass(frozen=True)
class Signature:
    """The types a handler's arguments are read as, and the type of its result."""

    params: tuple[Any, ...]
    required: int
    """How many arguments it needs (the others have defaults)."""
    result: Any

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> Signature:
        """``fn``'s parameter and return types (a method's ``self`` left out, bound or not)."""
        hints = typing.get_type_hints(fn)
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
        ]
        return cls(
            params=tuple(hints.get(p.name, Any) for p in params),
            required=sum(1 for p in params if p.default is p.empty),
            result=hints.get("return", Any),
        )


@dataclass(frozen=True)
class WorkflowTypes:
    """A workflow's run method and update handlers, as types."""

    run: Signature
    updates: Mapping[str, Signature] = field(default_factory=dict)

    @classmethod
    def of(cls, run: Callable[..., Any], *updates: Callable[..., Any]) -> WorkflowTypes:
        """The types of ``run`` and of each update handler (named as its method)."""
        return cls(run=Signature.of(run), updates={fn.__name__: Signature.of(fn) for fn in updates})


@dataclass(frozen=True)
class CodeTypes:
    """What a version of the code reads payloads as: workflows by type, activities by name."""

    workflows: Mapping[str, WorkflowTypes]
    activities: Mapping[str, Signature]

    @staticmethod
    def activities_of(functions: Iterable[Callable[..., Any]]) -> dict[str, Signature]:
        """Activity functions (bound methods or not) by the name they are registered under."""
        return {fn.__name__: Signature.of(fn) for fn in functions}


class PayloadKind(StrEnum):
    """Which payload of a history was read."""

    WORKFLOW_INPUT = "workflow_input"
    WORKFLOW_RESULT = "workflow_result"
    ACTIVITY_INPUT = "activity_input"
    ACTIVITY_RESULT = "activity_result"
    UPDATE_INPUT = "update_input"
    UPDATE_RESULT = "update_result"
    FAILURE = "failure"
    """A failure (its message and stack trace are an encrypted payload)."""
    OTHER = "other"
    """A payload no handler declares a type for (a signal's, cancellation details)."""


_WHAT = {
    PayloadKind.WORKFLOW_INPUT: "the input of workflow {}",
    PayloadKind.WORKFLOW_RESULT: "the result of workflow {}",
    PayloadKind.ACTIVITY_INPUT: "the input of activity {}",
    PayloadKind.ACTIVITY_RESULT: "the result of activity {}",
    PayloadKind.UPDATE_INPUT: "the input of update {}",
    PayloadKind.UPDATE_RESULT: "the result of update {}",
    PayloadKind.FAILURE: "the failure of {}",
    PayloadKind.OTHER: "the payload in {}",
}


@dataclass(frozen=True)
class Read:
    """One payload (or one call's arguments) of a history, and whether it could be read."""

    event_id: int
    kind: PayloadKind
    name: str
    """The workflow, activity or update it belongs to (else the event's field)."""
    problem: str | None = None
    """Why today's code cannot read it; None: it can."""

    @property
    def what(self) -> str:
        """What was read, where: "the input of activity get_distance (event 5)"."""
        return f"{_WHAT[self.kind].format(self.name)} (event {self.event_id})"

    def __str__(self) -> str:
        return self.what if self.problem is None else f"{self.what}: {self.problem}"


async def read_history(
    history: WorkflowHistory, converter: DataConverter, types: CodeTypes
) -> list[Read]:
    """Every payload of ``history`` decoded as ``types`` say, through ``converter`` (a
    worker's: strict); what was read, each with its problem if it could not be."""
    reader = _Reader(converter, types)
    for event in history.events:
        await reader.event(event)
    return reader.reads


class _Reader:
    """Reads a history's events in order, remembering what later events refer to."""

    def __init__(self, converter: DataConverter, types: CodeTypes) -> None:
        self._converter = converter
        self._types = types
        self._workflow_name = "?"
        self._workflow: WorkflowTypes | None = None
        self._activities: dict[int, str] = {}
        """Scheduled event id -> activity name."""
        self._updates: dict[str, str] = {}
        """Update id -> update name."""
        self.reads: list[Read] = []

    async def event(self, event: HistoryEvent) -> None:
        kind = event.WhichOneof("attributes")
        if kind is None:
            return
        attributes: Message = getattr(event, kind)
        consumed = await self._typed(event, kind)
        await self._untyped(
            event.event_id, kind.removesuffix("_event_attributes"), attributes, consumed
        )

    async def _typed(self, event: HistoryEvent, kind: str) -> frozenset[str]:
        """Read the payloads of ``event`` whose types the code declares; the names of the
        attribute fields read that way (the rest are read untyped)."""
        at = event.event_id
        if kind == "workflow_execution_started_event_attributes":
            started = event.workflow_execution_started_event_attributes
            self._workflow_name = started.workflow_type.name
            self._workflow = self._types.workflows.get(self._workflow_name)
            if self._workflow is None:
                self._problem(
                    at,
                    PayloadKind.WORKFLOW_INPUT,
                    self._workflow_name,
                    "this version has no workflow of that type",
                )
            else:
                await self._call(
                    at,
                    PayloadKind.WORKFLOW_INPUT,
                    self._workflow_name,
                    started.input,
                    self._workflow.run,
                )
            return frozenset({"input"})
        if kind == "workflow_execution_completed_event_attributes":
            completed = event.workflow_execution_completed_event_attributes
            if self._workflow is not None:
                await self._result(
                    at,
                    PayloadKind.WORKFLOW_RESULT,
                    self._workflow_name,
                    completed.result,
                    self._workflow.run,
                )
                return frozenset({"result"})
        if kind == "activity_task_scheduled_event_attributes":
            scheduled = event.activity_task_scheduled_event_attributes
            name = self._activities[at] = scheduled.activity_type.name
            signature = self._types.activities.get(name)
            if signature is None:
                self._problem(at, PayloadKind.ACTIVITY_INPUT, name, _NO_ACTIVITY)
            else:
                await self._call(at, PayloadKind.ACTIVITY_INPUT, name, scheduled.input, signature)
            return frozenset({"input"})
        if kind == "activity_task_completed_event_attributes":
            done = event.activity_task_completed_event_attributes
            name = self._activities.get(done.scheduled_event_id, "?")
            signature = self._types.activities.get(name)
            if signature is not None:  # a missing one was named where it was scheduled
                await self._result(at, PayloadKind.ACTIVITY_RESULT, name, done.result, signature)
                return frozenset({"result"})
        if kind in (
            "activity_task_failed_event_attributes",
            "activity_task_timed_out_event_attributes",
        ):
            ended = getattr(event, kind)
            name = self._activities.get(ended.scheduled_event_id, "?")
            await self._failure(at, f"activity {name}", ended.failure)
            return frozenset({"failure"})
        if kind == "workflow_execution_failed_event_attributes":
            failed = event.workflow_execution_failed_event_attributes
            await self._failure(at, f"workflow {self._workflow_name}", failed.failure)
            return frozenset({"failure"})
        if kind == "marker_recorded_event_attributes":
            await self._marker(at, event)
            return frozenset({"details"})
        if kind == "workflow_execution_update_accepted_event_attributes":
            accepted = event.workflow_execution_update_accepted_event_attributes
            request = accepted.accepted_request
            await self._update_input(
                at,
                request.meta.update_id or accepted.protocol_instance_id,
                request.input.name,
                request.input.args,
            )
            return frozenset({"accepted_request"})
        if kind == "workflow_execution_update_admitted_event_attributes":
            admitted = event.workflow_execution_update_admitted_event_attributes.request
            await self._update_input(
                at, admitted.meta.update_id, admitted.input.name, admitted.input.args
            )
            return frozenset({"request"})
        if kind == "workflow_execution_update_completed_event_attributes":
            outcome = event.workflow_execution_update_completed_event_attributes
            name = self._updates.get(outcome.meta.update_id, "?")
            update = self._workflow.updates.get(name) if self._workflow else None
            if update is not None and outcome.outcome.HasField("success"):
                await self._result(
                    at, PayloadKind.UPDATE_RESULT, name, outcome.outcome.success, update
                )
                return frozenset({"outcome"})
        return frozenset()

    async def _update_input(self, at: int, update_id: str, name: str, args: Payloads) -> None:
        if update_id in self._updates:
            return  # admitted, then accepted: the same arguments, read once
        self._updates[update_id] = name
        update = self._workflow.updates.get(name) if self._workflow else None
        if update is None:
            self._problem(
                at,
                PayloadKind.UPDATE_INPUT,
                name,
                f"{self._workflow_name} in this version has no update of that name",
            )
        else:
            await self._call(at, PayloadKind.UPDATE_INPUT, name, args, update)

    async def _marker(self, at: int, event: HistoryEvent) -> None:
        """A local activity's result, read as its activity's return type; other markers
        (patches and the like) hold the SDK's own plain data, not the product's."""
        marker = event.marker_recorded_event_attributes
        if marker.marker_name != LOCAL_ACTIVITY_MARKER:
            return
        name = _local_activity_name(marker.details.get("data"))
        signature = self._types.activities.get(name) if name else None
        if name is None:
            self._problem(
                at,
                PayloadKind.ACTIVITY_RESULT,
                "?",
                "the local activity's marker does not say which activity it ran",
            )
        elif signature is None:
            self._problem(at, PayloadKind.ACTIVITY_RESULT, name, _NO_ACTIVITY)
        elif "result" in marker.details:
            await self._result(
                at, PayloadKind.ACTIVITY_RESULT, name, marker.details["result"], signature
            )

    async def _call(
        self, at: int, kind: PayloadKind, name: str, payloads: Payloads, signature: Signature
    ) -> None:
        """A call's arguments, read as ``signature``'s parameters."""
        given = len(payloads.payloads)
        if given > len(signature.params) or given < signature.required:
            takes = (
                str(signature.required)
                if signature.required == len(signature.params)
                else f"{signature.required} to {len(signature.params)}"
            )
            self._problem(
                at,
                kind,
                name,
                f"it takes {takes} argument(s) in this version; the history has {given}",
            )
            return
        await self._decode(at, kind, name, payloads.payloads, list(signature.params[:given]))

    async def _result(
        self, at: int, kind: PayloadKind, name: str, payloads: Payloads, signature: Signature
    ) -> None:
        if payloads.payloads:
            await self._decode(at, kind, name, payloads.payloads[:1], [signature.result])

    async def _decode(
        self, at: int, kind: PayloadKind, name: str, payloads: Sequence[Payload], hints: list[Any]
    ) -> None:
        try:
            await self._converter.decode(payloads, hints)
        except Exception as err:  # whatever the converter says, it is why: kept as the problem
            self._problem(at, kind, name, _reason(err))
        else:
            self.reads.append(Read(at, kind, name))

    async def _untyped(
        self, at: int, where: str, message: Message, consumed: frozenset[str]
    ) -> None:
        """Every payload and failure of ``message`` outside the ``consumed`` fields, read
        with no type: each must decrypt and decode."""
        for descriptor, value in message.ListFields():
            name = descriptor.name
            if name in consumed or name in _NOT_OURS:
                continue
            values = _values(descriptor, value)
            for item in values:
                if isinstance(item, Failure):
                    await self._failure(at, where, item)
                elif isinstance(item, Payload):
                    await self._decode(at, PayloadKind.OTHER, f"{where}.{name}", [item], [])
                elif isinstance(item, Message):
                    await self._untyped(at, f"{where}.{name}", item, frozenset())

    async def _failure(self, at: int, where: str, failure: Failure) -> None:
        """A failure: its payloads (the encrypted message and stack trace, details, its
        causes') must each be read, and the failure converted. The SDK reads a message it
        cannot decrypt as "Encoded failure" without a word: this says so."""
        try:
            for payload in _payloads_in(failure):
                await self._converter.decode([payload])
            copy = Failure()
            copy.CopyFrom(failure)  # decoding rewrites the failure in place
            await self._converter.decode_failure(copy)
        except Exception as err:  # as in _decode: the converter's words are the problem
            self._problem(at, PayloadKind.FAILURE, where, _reason(err))
        else:
            self.reads.append(Read(at, PayloadKind.FAILURE, where))

    def _problem(self, at: int, kind: PayloadKind, name: str, problem: str) -> None:
        self.reads.append(Read(at, kind, name, problem))


_NO_ACTIVITY = "this version has no activity of that name (renamed or removed?)"


def _payloads_in(message: Message) -> Iterator[Payload]:
    """Every payload inside ``message``, at any depth (headers and the like left out)."""
    for descriptor, value in message.ListFields():
        if descriptor.name in _NOT_OURS:
            continue
        for item in _values(descriptor, value):
            if isinstance(item, Payload):
                yield item
            elif isinstance(item, Message):
                yield from _payloads_in(item)


def _values(descriptor: FieldDescriptor, value: Any) -> list[Any]:
    """A field's values: a map's values, a repeated field's items, or the one value."""
    if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
        return list(value.values())
    return list(value) if descriptor.is_repeated else [value]


def _local_activity_name(data: Payloads | None) -> str | None:
    """The activity a local activity marker recorded, from its (plain JSON) marker data."""
    if data is None or not data.payloads:
        return None
    try:
        name = json.loads(data.payloads[0].data).get("activity_type")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _reason(err: BaseException) -> str:
    """Why a payload could not be read, in one line, card numbers masked."""
    if isinstance(err, ApplicationError):  # the product's converter's: card numbers masked
        text = err.message
        if err.type == "ValidationError":  # "input: <field>: <why>"
            text = text.removeprefix("input: ")
    else:
        text = f"{type(err).__name__}: {err}"
        if err.__cause__ is not None:
            text += f": {err.__cause__}"
        text = mask_card_numbers(text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
