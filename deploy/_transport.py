"""The boundary between the round driver and the sites: a :class:`Transport`.

The driver sends one :class:`~deploy._wire.WireMessage` per node and gets back the
replies that arrived within the stage's timeout; a node that does not answer in time, or
answers with an error, is missing from :attr:`Exchange.replies` and named in
:attr:`Exchange.failures` (the driver treats it as a dropout). Two implementations:

* :class:`InProcessTransport`: the sites are objects in this process (tests, fast runs);
* :class:`FlowerTransport`: Flower 1.42's ``Grid`` (``send_and_receive``) to ClientApps on
  SuperNodes, in Flower's simulation engine or across machines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from deploy._errors import DeploymentError, WireFormatError
from deploy._wire import WireMessage, flower_message_type, wire_type_of

if TYPE_CHECKING:
    from flwr.app import Message, RecordDict
    from flwr.serverapp import Grid

#: A site: takes one request, returns its reply (raises on refusal).
Handler = Callable[[WireMessage], WireMessage]

CONFIG_RECORD = "secagg"
ARRAY_RECORD = "arrays"
#: How often the Flower transport pulls replies while a stage waits.
POLL_SECONDS = 0.2
TYPE_KEY = "secagg.type"
VERSION_KEY = "secagg.version"


@dataclass(frozen=True)
class Exchange:
    """The replies of one stage, by node id, and why the other nodes gave none."""

    replies: dict[int, WireMessage] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


class Transport(Protocol):
    """What the round driver needs of a transport."""

    def nodes(self) -> list[int]:
        """The ids of the nodes connected now."""
        ...

    def exchange(self, requests: Mapping[int, WireMessage], *, timeout: float) -> Exchange:
        """Send each request to its node; wait at most ``timeout`` seconds for replies."""
        ...


class InProcessTransport:
    """Sites as handlers in this process; ``down`` nodes never answer (a crashed site)."""

    def __init__(self, sites: Mapping[int, Handler]) -> None:
        self.sites = dict(sites)
        self.down: set[int] = set()
        self.bytes_sent = 0
        self.bytes_received = 0

    def nodes(self) -> list[int]:
        return sorted(self.sites)

    def exchange(self, requests: Mapping[int, WireMessage], *, timeout: float) -> Exchange:
        exchange = Exchange()
        for node_id, request in sorted(requests.items()):
            if node_id in self.down or node_id not in self.sites:
                exchange.failures[node_id] = "no reply before the stage timeout"
                continue
            self.bytes_sent += message_size(request)
            try:
                reply = self.sites[node_id](request)
            except Exception as error:  # a site's failure is its own; the others go on
                exchange.failures[node_id] = f"{type(error).__name__}: {error}"
                continue
            self.bytes_received += message_size(reply)
            exchange.replies[node_id] = reply
        return exchange


def message_size(message: WireMessage) -> int:
    """Payload bytes of a message (field values and array data; no framing)."""
    size = sum(len(v) if isinstance(v, bytes | str) else 8 for v in message.fields.values())
    return size + sum(int(np.asarray(a).nbytes) for a in message.arrays.values())


# ------------------------------------------------------------------------- Flower mapping
def to_record_dict(message: WireMessage) -> RecordDict:
    """The Flower ``RecordDict`` of a wire message (docs/formats.md)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

    config = ConfigRecord({TYPE_KEY: message.type, VERSION_KEY: message.version})
    for name, value in message.fields.items():
        config[name] = value
    content = RecordDict({CONFIG_RECORD: config})
    if message.arrays:
        content[ARRAY_RECORD] = ArrayRecord(
            {name: Array(np.ascontiguousarray(a)) for name, a in message.arrays.items()}
        )
    return content


def from_record_dict(content: RecordDict, *, expected_type: str | None = None) -> WireMessage:
    """Parse a Flower ``RecordDict`` back into a :class:`WireMessage`."""
    config = content.config_records.get(CONFIG_RECORD)
    if config is None:
        raise WireFormatError(f"no {CONFIG_RECORD!r} config record")
    fields = dict(config)
    message_type = fields.pop(TYPE_KEY, None)
    version = fields.pop(VERSION_KEY, None)
    if not isinstance(message_type, str) or not isinstance(version, int):
        raise WireFormatError("the message names no type or version")
    if expected_type is not None and message_type != expected_type:
        raise WireFormatError(f"expected a {expected_type} message, got {message_type}")
    arrays = {}
    record = content.array_records.get(ARRAY_RECORD)
    if record is not None:
        arrays = {name: array.numpy() for name, array in record.items()}
    return WireMessage(type=message_type, fields=fields, arrays=arrays, version=version)  # type: ignore[arg-type]


class FlowerTransport:
    """Flower's ``Grid``: one message per node, replies pulled until the stage timeout."""

    def __init__(self, grid: Grid, *, round_group: Callable[[], str] | None = None) -> None:
        self.grid = grid
        self.round_group = round_group
        self.bytes_sent = 0
        self.bytes_received = 0

    def nodes(self) -> list[int]:
        return sorted(int(n) for n in self.grid.get_node_ids())

    def _take(
        self,
        exchange: Exchange,
        node_id: int,
        reply: Message,
        requests: Mapping[int, WireMessage],
    ) -> None:
        if reply.has_error():
            exchange.failures[node_id] = f"site error: {reply.error.reason}"
            return
        try:
            parsed = from_record_dict(reply.content, expected_type=requests[node_id].type)
        except WireFormatError as error:
            exchange.failures[node_id] = f"malformed reply: {error}"
            return
        self.bytes_received += message_size(parsed)
        exchange.replies[node_id] = parsed

    def wait_for_nodes(self, count: int, *, timeout: float) -> list[int]:
        """Wait until ``count`` nodes are connected; :class:`DeploymentError` if not."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.nodes()
            if len(nodes) >= count:
                return nodes
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"{len(nodes)} of {count} SuperNodes connected within {timeout:.0f} s"
                )
            time.sleep(0.2)

    def exchange(self, requests: Mapping[int, WireMessage], *, timeout: float) -> Exchange:
        from flwr.app import Message

        messages: list[Message] = []
        for node_id, request in sorted(requests.items()):
            self.bytes_sent += message_size(request)
            messages.append(
                Message(
                    to_record_dict(request),
                    dst_node_id=node_id,
                    message_type=flower_message_type(request.type),
                    group_id=self.round_group() if self.round_group else None,
                )
            )
        exchange = Exchange()
        # Push, then pull until every node replied or the timeout: replies are matched to
        # their request by message id (an error reply for an unreachable node comes from
        # the SuperLink, whose node id is not the destination's).
        ids = list(self.grid.push_messages(messages))
        node_of = dict(zip(ids, sorted(requests), strict=True))
        waiting = set(ids)
        deadline = time.monotonic() + timeout
        while waiting:
            for reply in self.grid.pull_messages(list(waiting)):
                message_id = reply.metadata.reply_to_message_id
                if message_id not in waiting:
                    continue
                waiting.discard(message_id)
                self._take(exchange, node_of[message_id], reply, requests)
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        for node_id in requests:
            if node_id not in exchange.replies and node_id not in exchange.failures:
                exchange.failures[node_id] = "no reply before the stage timeout"
        return exchange


def reply_to(request: Message, reply: WireMessage) -> Message:
    """A Flower reply message carrying ``reply``."""
    from flwr.app import Message

    return Message(to_record_dict(reply), reply_to=request)


def parse_request(request: Message) -> WireMessage:
    """The wire message a Flower request carries (its type must match the Flower type)."""
    wire_type = wire_type_of(request.metadata.message_type)
    return from_record_dict(request.content, expected_type=wire_type)


def missing(nodes: Collection[int], exchange: Exchange) -> list[int]:
    """The nodes of ``nodes`` that gave no reply."""
    return sorted(n for n in nodes if n not in exchange.replies)


__all__ = [
    "Exchange",
    "FlowerTransport",
    "Handler",
    "InProcessTransport",
    "Transport",
    "from_record_dict",
    "message_size",
    "parse_request",
    "reply_to",
    "to_record_dict",
]
