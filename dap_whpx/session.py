"""One debug session: DAP requests in, responses and events out, the engine underneath.

Requests are dispatched to small handlers registered with `@request` (one module per
topic in `handlers/`, after gdb's DAP server); a handler that implies a capability
declares it with `@capability` beside it, so `initialize` reports exactly what is
registered. The session does no I/O: the server gives it a thread-safe `send`.
Engine events become DAP events in one place, `on_engine_event`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from dap_whpx.protocol.framing import ProtocolError
from dap_whpx.protocol.messages import Request
from whpx_core.debug.events import Output

log = logging.getLogger("dap_whpx")

Send = Callable[[dict[str, Any]], None]
Handler = Callable[["Session", Any], dict[str, Any] | None]


class DapError(Exception):
    """A request that cannot be carried out; the message is shown to the user."""


@dataclass
class _Registered:
    handler: Handler
    arguments: type[BaseModel] | None


_HANDLERS: dict[str, _Registered] = {}
_CAPABILITIES: dict[str, Any] = {}


def request(command: str, arguments: type[BaseModel] | None = None):  # type: ignore[no-untyped-def]
    def register(handler: Handler) -> Handler:
        _HANDLERS[command] = _Registered(handler, arguments)
        return handler

    return register


def capability(**capabilities: Any):  # type: ignore[no-untyped-def]
    def register(handler: Handler) -> Handler:
        _CAPABILITIES.update(capabilities)
        return handler

    return register


def capabilities() -> dict[str, Any]:
    return dict(_CAPABILITIES)


def field_errors(error: ValidationError, command: str) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "arguments"
        parts.append(f"'{where}': {problem['msg']}")
    return f"{command}: invalid arguments: " + "; ".join(parts)


@dataclass
class VariableHandles:
    """variablesReference numbers, valid until the VM runs again."""

    _next: int = 1
    _items: dict[int, Any] = field(default_factory=dict)
    # Facts about the current stop (unwound frames per vCPU), dropped with the handles.
    cache: dict[Any, Any] = field(default_factory=dict)

    def add(self, item: Any) -> int:
        ref = self._next
        self._next += 1
        self._items[ref] = item
        return ref

    def get(self, ref: int) -> Any:
        if ref not in self._items:
            raise DapError(f"variablesReference {ref} is not valid (the VM has run since)")
        return self._items[ref]

    def clear(self) -> None:
        self._items.clear()
        self.cache.clear()


class Session:
    def __init__(self, send: Send) -> None:
        self._send_raw = send
        self._seq = 0
        self._seq_lock = threading.Lock()
        self.lock = threading.RLock()  # held while a request or an engine event is handled
        self.state: dict[str, Any] = {}  # per-topic state owned by the handler modules
        self.handles = VariableHandles()
        self.engine: Any = None
        self.ended = False  # disconnect processed: the server closes the connection
        from dap_whpx import handlers  # registers every handler

        handlers.load()

    # -- output -----------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        with self._seq_lock:
            self._seq += 1
            message = {"seq": self._seq, **message}
            self._send_raw(message)

    def event(self, name: str, body: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"type": "event", "event": name}
        if body is not None:
            message["body"] = body
        self.send(message)

    def output(self, text: str, category: str = "console") -> None:
        self.event("output", {"category": category, "output": text})

    def _respond(self, request_seq: int, command: str, body: dict[str, Any] | None) -> None:
        message: dict[str, Any] = {"type": "response", "request_seq": request_seq,
                                   "success": True, "command": command}
        if body is not None:
            message["body"] = body
        self.send(message)

    def _fail(self, request_seq: int, command: str, text: str) -> None:
        self.send({"type": "response", "request_seq": request_seq, "success": False,
                   "command": command, "message": text,
                   "body": {"error": {"id": 1, "format": text.replace("{", "{{")
                                      .replace("}", "}}"), "showUser": True}}})

    # -- input ------------------------------------------------------------------------
    def handle(self, item: dict[str, Any] | ProtocolError) -> None:
        """Handle one decoded message. Never raises: every failure becomes an error
        response (or, where no seq can be read, a logged protocol error)."""
        if isinstance(item, ProtocolError):
            self._protocol_error(item.message, item.seq, item.command)
            return
        try:
            message = Request.model_validate(item)
        except ValidationError as error:
            seq = item.get("seq")
            command = item.get("command")
            self._protocol_error(field_errors(error, "request"),
                                 seq if isinstance(seq, int) else None,
                                 command if isinstance(command, str) else None)
            return
        registered = _HANDLERS.get(message.command)
        if registered is None:
            self._fail(message.seq, message.command,
                       f"unknown command '{message.command[:64]}'")
            return
        try:
            arguments: Any = message.arguments
            if registered.arguments is not None:
                arguments = registered.arguments.model_validate(message.arguments or {})
            with self.lock:
                # The response goes out inside the lock: an engine event caused by this
                # request (a stop after a step) must not overtake it.
                self.state.pop("after_response", None)
                body = registered.handler(self, arguments)
                self._respond(message.seq, message.command, body)
                after = self.state.pop("after_response", None)
                if after is not None:
                    self._run_after(message.command, after)
        except ValidationError as error:
            self._fail(message.seq, message.command, field_errors(error, message.command))
        except DapError as error:
            self._fail(message.seq, message.command, str(error))
        except Exception as error:  # a bug must cost one request, not the session
            log.error("request %s failed:\n%s", message.command, traceback.format_exc())
            self._fail(message.seq, message.command, f"internal error: {error!r}")

    def after_response(self, action: Callable[[], None]) -> None:
        """Run `action` once the current request's response has been sent (DAP wants
        e.g. the `initialized` event after the launch response)."""
        previous = self.state.get("after_response")
        if previous is None:
            self.state["after_response"] = action
        else:
            self.state["after_response"] = lambda: (previous(), action())

    def _run_after(self, command: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as error:  # the response is out: tell the user another way
            log.error("after %s:\n%s", command, traceback.format_exc())
            self.output(f"dap-whpx: {command} failed: {error}\n", "stderr")

    def _protocol_error(self, text: str, seq: int | None, command: str | None) -> None:
        log.warning("protocol error: %s", text)
        if seq is not None:
            self._fail(seq, command or "unknown", f"protocol error: {text}")
        else:
            self.output(f"dap-whpx: ignored a malformed message: {text}\n")

    # -- engine events ------------------------------------------------------------------
    def start_event_pump(self) -> None:
        """A thread that turns the engine's events into DAP events as they come."""
        engine = self.engine
        stop = threading.Event()

        held: list[Any] = []  # an event read while gathering output, handled next

        def pump() -> None:
            while not stop.is_set():
                if held:
                    event = held.pop()
                else:
                    try:
                        event = engine.events.get(timeout=0.1)
                    except queue.Empty:
                        continue
                if isinstance(event, Output):
                    event = _gather_output(engine.events, event, held)
                with self.lock:
                    if stop.is_set() or self.engine is not engine:
                        return  # a closed or replaced engine's leftovers
                    self.on_engine_event(event)

        thread = threading.Thread(target=pump, name="engine-events", daemon=True)
        self.state["pump"] = (thread, stop)
        thread.start()

    def stop_event_pump(self) -> None:
        entry = self.state.pop("pump", None)
        if entry is not None:
            entry[1].set()  # not joined: it may be waiting for the lock we hold

    def on_engine_event(self, event: Any) -> None:
        from dap_whpx.handlers import events

        with self.lock:
            events.translate(self, event)


# Serial output arrives a byte at a time (the guest writes the UART's data port); one DAP
# event per byte floods the client. Output that follows within this long is sent as one.
OUTPUT_GATHER_S = 0.01
OUTPUT_GATHER_MAX = 64 * 1024


def _gather_output(events: Any, first: Output, held: list[Any]) -> Output:
    """`first` and the output that follows it within OUTPUT_GATHER_S, as one event; the
    first other event met is left in `held` (order is kept)."""
    data = bytearray(first.data)
    deadline = time.monotonic() + OUTPUT_GATHER_S
    while len(data) < OUTPUT_GATHER_MAX:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            event = events.get(timeout=remaining)
        except queue.Empty:
            break
        if not isinstance(event, Output):
            held.append(event)
            break
        data += event.data
    return Output(bytes(data))
