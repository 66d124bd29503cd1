"""How bus messages become stream payloads: MessagePack (production) or JSON.

Used by ``transport`` and ``broadcast``; both sides of a stream must use the
same codec. MessagePack with packed arrays is the wire format
(``services.bus.messages``); JSON exists for the benchmark's baseline and for
streams a human wants to read in redis-cli.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import msgspec

from services.bus.messages import encode as msgpack_encode

T = TypeVar("T", bound=msgspec.Struct)

# Stream entry fields: the message's type name and its encoded payload.
KIND, DATA = b"k", b"d"


def text(value: bytes | str) -> str:
    """Redis replies are bytes (the bus's clients do not decode): ids as str."""
    return value.decode() if isinstance(value, bytes) else value


class Codec(Protocol):
    """How messages become stream payloads (MessagePack by default)."""

    name: str

    def encode(self, message: msgspec.Struct) -> bytes: ...

    def decoder(self, kind: type[T]) -> Callable[[bytes], T]: ...


class MsgpackCodec:
    """MessagePack with packed arrays: the production wire format."""

    name = "msgpack"

    def encode(self, message: msgspec.Struct) -> bytes:
        return msgpack_encode(message)

    def decoder(self, kind: type[T]) -> Callable[[bytes], T]:
        return msgspec.msgpack.Decoder(kind).decode


class JsonCodec:
    """JSON (msgspec): readable in redis-cli; the benchmark's baseline."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()

    def encode(self, message: msgspec.Struct) -> bytes:
        return self._encoder.encode(message)

    def decoder(self, kind: type[T]) -> Callable[[bytes], T]:
        return msgspec.json.Decoder(kind).decode


MSGPACK = MsgpackCodec()
JSON = JsonCodec()
