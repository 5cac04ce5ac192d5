"""DAP's `Content-Length` framing, sans-IO (after h11): bytes in, messages out.

The decoder never raises on bad input. Each problem becomes a `ProtocolError` item in the
stream, carrying the request's `seq` and `command` when they can still be read, so the
session can answer with an error response and go on with the next message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_CONTENT_LENGTH = 16 * 1024 * 1024
MAX_HEADER_LENGTH = 8 * 1024
_SEPARATOR = b"\r\n\r\n"
_SEQ = re.compile(rb'"seq"\s*:\s*(\d{1,18})')
_COMMAND = re.compile(rb'"command"\s*:\s*"([A-Za-z0-9_]{1,64})"')


@dataclass(frozen=True)
class ProtocolError:
    message: str
    seq: int | None = None  # of the offending request, when it could be read
    command: str | None = None


Item = dict[str, Any] | ProtocolError


class FrameDecoder:
    def __init__(self, max_content_length: int = MAX_CONTENT_LENGTH) -> None:
        self._buffer = bytearray()
        self._max = max_content_length
        self._skip = 0  # bytes of an oversized body still to discard

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def items(self) -> Iterator[Item]:
        """Every complete message (or problem) buffered so far."""
        while True:
            if self._skip:
                dropped = min(self._skip, len(self._buffer))
                del self._buffer[:dropped]
                self._skip -= dropped
                if self._skip:
                    return
            end = self._buffer.find(_SEPARATOR)
            if end < 0:
                if len(self._buffer) > MAX_HEADER_LENGTH:
                    self._buffer.clear()
                    yield ProtocolError(f"header longer than {MAX_HEADER_LENGTH} bytes; "
                                        "input discarded")
                return
            header = bytes(self._buffer[:end])
            length, problem = _content_length(header)
            if problem is not None:
                del self._buffer[: end + len(_SEPARATOR)]
                yield ProtocolError(problem)
                continue
            assert length is not None
            if length > self._max:
                del self._buffer[: end + len(_SEPARATOR)]
                self._skip = length
                yield ProtocolError(f"Content-Length {length} exceeds the limit of "
                                    f"{self._max} bytes; message discarded")
                continue
            start = end + len(_SEPARATOR)
            if len(self._buffer) < start + length:
                return
            body = bytes(self._buffer[start : start + length])
            del self._buffer[: start + length]
            yield _parse_body(body)


def _content_length(header: bytes) -> tuple[int | None, str | None]:
    length = None
    for line in header.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            return None, f"malformed header line {line[:80]!r}"
        if name.strip().lower() == b"content-length":
            text = value.strip()
            if not text.isdigit():
                return None, f"invalid Content-Length {text[:40]!r}"
            length = int(text)
    if length is None:
        return None, "missing Content-Length header"
    return length, None


def _parse_body(body: bytes) -> Item:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        return ProtocolError(f"invalid JSON: {error}", *_salvage(body))
    if not isinstance(message, dict):
        return ProtocolError(f"a message must be a JSON object, not {type(message).__name__}")
    return message


def _salvage(body: bytes) -> tuple[int | None, str | None]:
    """The seq and command of a request whose JSON is broken, if they can be read."""
    seq = _SEQ.search(body)
    command = _COMMAND.search(body)
    return (int(seq.group(1)) if seq else None,
            command.group(1).decode() if command else None)


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
