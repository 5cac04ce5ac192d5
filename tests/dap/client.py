"""A small independent DAP client for the tests: real pipes or a real TCP socket.

It does its own framing (not the adapter's), and validates every message the adapter
sends against the official DAP JSON schema (vendored beside this file, MIT licence).
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = json.loads((Path(__file__).parent / "debugAdapterProtocol.json").read_text())
_validators: dict[str, jsonschema.Draft4Validator] = {}


def schema_name(message: dict[str, Any]) -> str:
    if message.get("type") == "event":
        name = message["event"]
        return name[0].upper() + name[1:] + "Event"
    if message.get("type") == "response":
        if not message.get("success"):
            return "ErrorResponse"
        name = message["command"]
        return name[0].upper() + name[1:] + "Response"
    return "ProtocolMessage"


def validate(message: dict[str, Any]) -> None:
    name = schema_name(message)
    if name not in SCHEMA["definitions"]:
        raise AssertionError(f"the adapter sent a message the DAP schema does not know: "
                             f"{name}: {message}")
    if name not in _validators:
        _validators[name] = jsonschema.Draft4Validator(
            {**SCHEMA, "$ref": f"#/definitions/{name}"})
    errors = sorted(_validators[name].iter_errors(message), key=str)
    if errors:
        raise AssertionError(f"{name} does not match the DAP schema: {errors[0].message} "
                             f"(at {list(errors[0].absolute_path)}): {message}")


class DapClient:
    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], None],
                 validate_messages: bool = True) -> None:
        self._validate = validate_messages  # off only in benchmarks: it is client time
        self._read = read
        self._write = write
        self._seq = 0
        self._responses: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.all_events: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.problems: list[str] = []  # schema violations, reported by the tests
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # -- transport ----------------------------------------------------------------
    @classmethod
    def spawn(cls, *extra: str, log: Path | None = None,
              validate_messages: bool = True) -> DapClient:
        args = [sys.executable, "-m", "dap_whpx", *extra]
        if log is not None:
            args += ["--log", str(log)]
        process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        assert process.stdin is not None and process.stdout is not None
        stdin, stdout = process.stdin, process.stdout

        def write(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        client = cls(stdout.read1, write, validate_messages)
        client.process = process
        return client

    @classmethod
    def connect(cls, port: int) -> DapClient:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.settimeout(None)
        client = cls(sock.recv, sock.sendall)
        client.socket = sock
        return client

    def send_raw(self, data: bytes) -> None:
        self._write(data)

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self._read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buffer += chunk
            while True:
                head, sep, rest = buffer.partition(b"\r\n\r\n")
                if not sep:
                    break
                length = int(head.split(b":", 1)[1])
                if len(rest) < length:
                    break
                message = json.loads(rest[:length])
                buffer = rest[length:]
                try:
                    if self._validate:
                        validate(message)
                except AssertionError as error:
                    self.problems.append(str(error))
                self.received.append(message)
                with self._cond:
                    if message.get("type") == "response":
                        self._responses[message["request_seq"]] = message
                    else:
                        self.all_events.append(message)
                        self.events.put(message)
                    self._cond.notify_all()

    # -- requests and events ---------------------------------------------------------
    def send(self, command: str, arguments: dict[str, Any] | None = None) -> int:
        self._seq += 1
        message: dict[str, Any] = {"seq": self._seq, "type": "request", "command": command}
        if arguments is not None:
            message["arguments"] = arguments
        body = json.dumps(message).encode()
        self._write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        return self._seq

    def response(self, seq: int, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while seq not in self._responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise TimeoutError(f"no response to request {seq}")
                self._cond.wait(remaining)
            return self._responses.pop(seq)

    def request(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = 60, ok: bool = True) -> dict[str, Any]:
        response = self.response(self.send(command, arguments), timeout)
        if ok and not response["success"]:
            raise AssertionError(f"{command} failed: {response.get('message')}")
        return response

    def wait_event(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """The next event called `name` (events before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {name} event")
            event = self.events.get(timeout=remaining)
            if event["event"] == name:
                return event

    def events_named(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.all_events if e["event"] == name]

    def output(self, category: str = "stdout") -> str:
        return "".join(e["body"]["output"] for e in self.all_events
                       if e["event"] == "output" and e["body"].get("category") == category)

    # -- a standard start -------------------------------------------------------------
    def start(self, program: Path, **launch: Any) -> dict[str, Any]:
        capabilities = self.request("initialize", {"adapterID": "whpx", "clientID": "tests",
                                                   "linesStartAt1": True})["body"]
        self.request("launch", {"program": str(program), **launch})
        self.wait_event("initialized")
        return capabilities

    def close(self) -> None:
        process = getattr(self, "process", None)
        if process is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        sock = getattr(self, "socket", None)
        if sock is not None:
            sock.close()
