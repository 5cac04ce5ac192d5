"""Malformed input never ends a session: each bad message gets an error response (or,
where no seq can be read, a logged protocol error), and a valid request still works."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dap_whpx.protocol.framing import FrameDecoder
from dap_whpx.session import Session
from tests.dap.client import DapClient, validate

COMMANDS = ["initialize", "launch", "threads", "continue", "next", "stackTrace", "scopes",
            "variables", "setBreakpoints", "setFunctionBreakpoints", "readMemory",
            "writeMemory", "disassemble", "evaluate", "pause", "setVariable", "bogus"]


def frame(body: bytes, length: int | None = None) -> bytes:
    return b"Content-Length: %d\r\n\r\n%s" % (len(body) if length is None else length, body)


def request(seq: int, command: str, arguments: Any = None) -> bytes:
    message: dict[str, Any] = {"seq": seq, "type": "request", "command": command}
    if arguments is not None:
        message["arguments"] = arguments
    return frame(json.dumps(message).encode())


def test_fixed_malformed_messages_over_real_pipes():
    client = DapClient.spawn()
    try:
        cases = [
            (b"Content-Type: text/plain\r\n\r\n{}", None),  # no Content-Length
            (b"Content-Length: ten\r\n\r\n", None),
            (frame(b'{"seq": 7, "type": "request", "command": "threads", oops}'), 7),
            (frame(b"[1, 2, 3]"), None),
            (frame(b'"just a string"'), None),
            (request(8, "noSuchCommand"), 8),
            (request(9, "launch", {"program": 42}), 9),
            (request(10, "readMemory", {"memoryReference": "0x1000", "count": "many"}), 10),
            (frame(b'{"type": "request", "command": "threads"}'), None),  # no seq
            (request(11, "stackTrace", {"threadId": 1}), 11),  # before launch
            (frame(b'{"seq": 12, "type": "request", "command": "threads", "arguments": 5}'), 12),
            (frame(b"\xff\xfe\x00garbage"), None),
        ]
        for data, seq in cases:
            client.send_raw(data)
            if seq is not None:
                response = client.response(seq, timeout=20)
                assert response["success"] is False and response["message"], response
        # The session survived all of it.
        assert client.request("initialize", {"adapterID": "whpx"})["success"]
        threads = client.request("threads")
        assert threads["success"] and threads["body"]["threads"] == []
        notes = [e for e in client.all_events if e["event"] == "output"]
        assert len(notes) >= 5  # the messages without a seq were reported, not dropped
        # An oversized declared length: reported, and its body discarded as it arrives
        # (whatever follows is that body) rather than buffered.
        client.send_raw(b"Content-Length: 999999999999\r\n\r\n" + b"x" * 100_000)
        client.wait_event("output", timeout=20)
        assert client.process.poll() is None
        assert client.problems == []
    finally:
        client.close()
    assert client.process.returncode == 0


class Collector:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        validate(message)  # every message, even for garbage input, follows the schema
        self.sent.append(message)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
requests_ = st.fixed_dictionaries(
    {"seq": st.integers(1, 10**6), "type": st.just("request"),
     "command": st.sampled_from(COMMANDS)},
    optional={"arguments": st.one_of(json_values,
                                     st.dictionaries(st.sampled_from(
                                         ["threadId", "program", "memoryReference", "count",
                                          "variablesReference", "expression", "frameId",
                                          "breakpoints", "source", "cpus"]),
                                         json_values, max_size=4))},
)
frames = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: frame(json.dumps(v).encode())),
    requests_.map(lambda r: frame(json.dumps(r).encode())),
    st.tuples(st.binary(max_size=60), st.integers(0, 80)).map(lambda p: frame(p[0], p[1])),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(chunks=st.lists(frames, min_size=1, max_size=6), split=st.integers(1, 64))
def test_generated_frames_never_kill_the_session(chunks, split):
    sent = Collector()
    session = Session(sent)
    decoder = FrameDecoder()
    data = b"".join(chunks) + b"\r\n\r\n"  # close any header left open by the junk
    for start in range(0, len(data), split):  # arrive in arbitrary pieces
        decoder.feed(data[start : start + split])
        for item in decoder.items():
            session.handle(item)
    # Resynchronise after whatever the junk left half-read, then a valid request works.
    decoder = FrameDecoder()
    decoder.feed(request(424242, "threads"))
    for item in decoder.items():
        session.handle(item)
    final = [m for m in sent.sent if m.get("request_seq") == 424242]
    assert final and final[-1]["success"], sent.sent[-3:]
