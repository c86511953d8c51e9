"""The connector tunnel's framing: TCP byte streams multiplexed over one WebSocket.

A connector (``bulk connector``) dials out one WebSocket to the service; over it the
service opens channels, each one TCP connection on the connector's loopback (to its
Playwright browser server). Every WebSocket message is binary and is one frame::

    type (1 byte) | channel (4 bytes, big-endian) | payload

    OPEN   the service opens ``channel`` (payload: the target, one byte: 0 browser)
    DATA   bytes of ``channel`` (1 to ``MAX_PAYLOAD`` of them)
    CLOSE  ``channel`` is closed (either side; no payload)

The first message from the connector is its hello (text, JSON: ``HELLO_KIND``, its
version, its node token); the service checks it before it accepts any frame.

Limits, so that a hostile or buggy peer cannot exhaust the other side: a frame is
at most ``MAX_FRAME`` bytes, a tunnel has at most ``MAX_CHANNELS`` channels open, and
each channel queues at most ``_QUEUED`` frames (the reader then waits: memory stays
bounded, at the price of head-of-line blocking between channels). A malformed frame
(unknown type, short, over the limit, data for a channel never opened, an OPEN over
the limit or for an open channel) is a ``TunnelError``: the tunnel is closed.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, Final, final

import attrs
import trio

from ._version import __version__

__all__ = [
    "CLOSE",
    "DATA",
    "HELLO_KIND",
    "MAX_CHANNELS",
    "MAX_FRAME",
    "MAX_PAYLOAD",
    "OPEN",
    "TARGET_BROWSER",
    "Frame",
    "Mux",
    "TunnelError",
    "decode_frame",
    "encode_frame",
    "hello",
    "parse_hello",
]

OPEN: Final = 1
DATA: Final = 2
CLOSE: Final = 3
TARGET_BROWSER: Final = 0
_HEADER: Final = struct.Struct("!BI")
#: Payload bytes of one DATA frame, at most.
MAX_PAYLOAD: Final = 64 * 1024
#: A whole frame (WebSocket message), at most.
MAX_FRAME: Final = _HEADER.size + MAX_PAYLOAD
#: Channels open at once on one tunnel (Playwright uses one per browser connection).
MAX_CHANNELS: Final = 32
#: What a connector's hello says it is; its size, at most.
HELLO_KIND: Final = "bulk-connector"
MAX_HELLO: Final = 1024
_QUEUED: Final = 16
_NODE_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class TunnelError(Exception):
    """The peer broke the tunnel's protocol (the tunnel is then closed)."""


@attrs.frozen
class Frame:
    """One decoded frame."""

    type: int
    channel: int
    payload: bytes = b""


def encode_frame(kind: int, channel: int, payload: bytes = b"") -> bytes:
    """One frame as a WebSocket message.

    Raises:
        TunnelError: The payload is over ``MAX_PAYLOAD`` or the channel out of range.
    """
    if len(payload) > MAX_PAYLOAD or not 0 <= channel < 2**32:
        raise TunnelError("frame over the limit")
    return _HEADER.pack(kind, channel) + payload


def decode_frame(message: bytes) -> Frame:
    """The frame in ``message``.

    Raises:
        TunnelError: Short, over ``MAX_FRAME``, an unknown type, an empty DATA, an
            OPEN without its one-byte target or a CLOSE with a payload.
    """
    if len(message) < _HEADER.size or len(message) > MAX_FRAME:
        raise TunnelError(f"a frame of {len(message)} bytes")
    kind, channel = _HEADER.unpack_from(message)
    payload = bytes(message[_HEADER.size :])
    if kind == OPEN and len(payload) != 1:
        raise TunnelError("OPEN takes a one-byte target")
    if kind == DATA and not payload:
        raise TunnelError("an empty DATA frame")
    if kind == CLOSE and payload:
        raise TunnelError("CLOSE takes no payload")
    if kind not in (OPEN, DATA, CLOSE):
        raise TunnelError(f"unknown frame type {kind}")
    return Frame(kind, channel, payload)


def hello(node_token: str) -> str:
    """The connector's first message."""
    return json.dumps({"kind": HELLO_KIND, "version": __version__, "node_token": node_token})


def parse_hello(message: Any) -> str:
    """The node token of a connector's hello.

    Raises:
        TunnelError: Not a text message, over ``MAX_HELLO``, not the hello's JSON, or
            a node token that is not 16-128 URL-safe characters.
    """
    if not isinstance(message, str) or len(message) > MAX_HELLO:
        raise TunnelError("the first message must be the connector's hello")
    try:
        facts = json.loads(message)
    except ValueError:
        raise TunnelError("the hello is not JSON") from None
    if not isinstance(facts, dict) or facts.get("kind") != HELLO_KIND:
        raise TunnelError("the first message must be the connector's hello")
    token = facts.get("node_token")
    if not isinstance(token, str) or not _NODE_TOKEN.match(token):
        raise TunnelError("the hello has no valid node token")
    return token


@attrs.define(eq=False)
class _Channel:
    send: trio.MemorySendChannel[bytes]
    receive: trio.MemoryReceiveChannel[bytes]
    stream: trio.abc.Stream | None = None
    closed_by_peer: bool = False


Send = Callable[[bytes], Awaitable[None]]
Opener = Callable[[int], Awaitable[trio.abc.Stream]]


@final
class Mux:
    """Both ends of the multiplexing, over a WebSocket given as ``send``.

    The service calls ``serve_stream`` for each TCP connection it forwards (it opens
    the channel); the connector passes ``opener`` (target -> a connected stream) and
    the frames' OPEN makes it connect. Either side feeds every received message to
    ``feed``.

    Args:
        send: Sends one binary WebSocket message (serialised here: one at a time).
        opener: On the connector: connects to a target; None on the service (an OPEN
            from the peer is then a protocol error).
        nursery: Where the connector's channel tasks run.
    """

    def __init__(
        self, send: Send, *, opener: Opener | None = None, nursery: trio.Nursery | None = None
    ) -> None:
        self._send = send
        #: Held for every message sent (a text message sent beside the frames too).
        self.send_lock = trio.Lock()
        self._opener = opener
        self._nursery = nursery
        self._channels: dict[int, _Channel] = {}
        self._next = 1

    @property
    def open_channels(self) -> int:
        return len(self._channels)

    async def _frame(self, kind: int, channel: int, payload: bytes = b"") -> None:
        message = encode_frame(kind, channel, payload)
        async with self.send_lock:
            await self._send(message)

    def _new_channel(self, channel: int) -> _Channel:
        send, receive = trio.open_memory_channel[bytes](_QUEUED)
        entry = self._channels[channel] = _Channel(send, receive)
        return entry

    async def feed(self, message: bytes) -> None:
        """Handle one message from the peer (waits while that channel's queue is full).

        Raises:
            TunnelError: The peer broke the protocol.
        """
        frame = decode_frame(message)
        entry = self._channels.get(frame.channel)
        if frame.type == OPEN:
            if self._opener is None or self._nursery is None:
                raise TunnelError("only the service opens channels")
            if entry is not None:
                raise TunnelError(f"channel {frame.channel} is already open")
            if len(self._channels) >= MAX_CHANNELS:
                raise TunnelError(f"over {MAX_CHANNELS} channels")
            entry = self._new_channel(frame.channel)
            self._nursery.start_soon(self._accept, frame.channel, frame.payload[0], entry)
        elif frame.type == DATA:
            if entry is None:
                # A frame the peer sent before it learnt the channel was closed.
                if frame.channel >= self._next and self._opener is None:
                    raise TunnelError(f"data for channel {frame.channel}, never opened")
                return
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await entry.send.send(frame.payload)
        else:
            if entry is not None:
                entry.closed_by_peer = True
                entry.send.close()

    async def serve_stream(self, stream: trio.abc.Stream, target: int = TARGET_BROWSER) -> None:
        """Forward ``stream`` through a new channel to ``target`` on the peer (service).

        Resource handling: ``stream`` is closed and the channel with it, however it
        ends; over ``MAX_CHANNELS`` the stream is closed at once.
        """
        if len(self._channels) >= MAX_CHANNELS:
            await stream.aclose()
            return
        channel = self._next
        self._next += 1
        entry = self._new_channel(channel)
        entry.stream = stream
        try:
            await self._frame(OPEN, channel, bytes([target]))
            await self._pump(channel, entry)
        finally:
            self._channels.pop(channel, None)

    async def _accept(self, channel: int, target: int, entry: _Channel) -> None:
        assert self._opener is not None
        try:
            try:
                entry.stream = await self._opener(target)
            except (OSError, ValueError):
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    await self._frame(CLOSE, channel)
                return
            await self._pump(channel, entry)
        finally:
            self._channels.pop(channel, None)

    async def _pump(self, channel: int, entry: _Channel) -> None:
        stream = entry.stream
        assert stream is not None

        async def outward() -> None:
            # Any failure ends the channel: the stream broke, or the WebSocket did
            # (whose library raises its own exceptions; the tunnel then ends anyway).
            with suppress(Exception):
                while True:
                    data = await stream.receive_some(MAX_PAYLOAD)
                    if not data:
                        break
                    await self._frame(DATA, channel, bytes(data))

        async def inward() -> None:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                async for data in entry.receive:
                    await stream.send_all(data)

        try:
            async with trio.open_nursery() as nursery:

                async def one(fn: Callable[[], Awaitable[None]]) -> None:
                    await fn()
                    nursery.cancel_scope.cancel()  # either way ends the channel

                nursery.start_soon(one, outward)
                nursery.start_soon(one, inward)
        finally:
            with trio.CancelScope(shield=True):
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    await stream.aclose()
                if not entry.closed_by_peer:
                    # As in outward: a dead WebSocket cannot carry the CLOSE.
                    with trio.move_on_after(5), suppress(Exception):
                        await self._frame(CLOSE, channel)

    def close_all(self) -> None:
        """End every channel (the tunnel is gone): their streams close."""
        for entry in list(self._channels.values()):
            entry.closed_by_peer = True
            entry.send.close()
