"""The transport: DAP over stdio (default) or TCP, on anyio.

Bytes from the client go through the sans-IO decoder; each message is handled on the
event loop's thread, one at a time, in order. Events from the engine's thread are handed
to the event loop; everything is written by one writer task, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from dap_whpx import __version__
from dap_whpx.protocol.framing import FrameDecoder, ProtocolError, encode
from dap_whpx.session import Session
from whpx_core.platform.choice import prepare_main_thread

log = logging.getLogger("dap_whpx")

Receive = Callable[[], Awaitable[bytes]]  # b"" at end of input
Write = Callable[[bytes], Awaitable[None]]


class ProtocolLog:
    """--log FILE: every message in and out, one JSON line each."""

    def __init__(self, path: Path | None) -> None:
        self._file = path.open("a", encoding="utf-8") if path else None
        self._lock = threading.Lock()

    def record(self, direction: str, message: Any) -> None:
        if self._file is None:
            return
        if isinstance(message, ProtocolError):
            message = {"protocolError": message.message}
        with self._lock:
            self._file.write(json.dumps({"dir": direction, "msg": message}) + "\n")
            self._file.flush()


async def run_session(receive: Receive, write: Write, protocol_log: ProtocolLog) -> None:
    send_stream, receive_stream = anyio.create_memory_object_stream[bytes](math.inf)
    loop = asyncio.get_running_loop()  # anyio.run's default backend

    def put(data: bytes) -> None:
        with contextlib.suppress(anyio.ClosedResourceError):
            send_stream.send_nowait(data)

    def send(message: dict[str, Any]) -> None:
        """Queue a message on the event loop, from any thread, without waiting for the
        loop: the engine-event thread sends while holding the session lock, and the loop
        may be waiting for that lock to handle a request (waiting here deadlocked). Every
        send is made under the session lock and queued in that order, so a response
        still goes out before the events its request caused."""
        protocol_log.record("out", message)
        data = encode(message)
        with contextlib.suppress(RuntimeError):  # the loop has closed: the session is over
            loop.call_soon_threadsafe(put, data)

    session = Session(send)
    decoder = FrameDecoder()

    async def writer() -> None:
        async with receive_stream:
            async for data in receive_stream:
                await write(data)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(writer)
        try:
            while not session.ended:
                chunk = await receive()
                if not chunk:
                    break
                decoder.feed(chunk)
                for item in decoder.items():
                    protocol_log.record("in", item)
                    # Handled right here, one at a time, in order: requests are short
                    # (a step is tens of microseconds), and a hand-over to a worker
                    # thread would cost more than most of them.
                    session.handle(item)
                    await anyio.lowlevel.checkpoint()  # let the writer flush replies
                    if session.ended:
                        break
        finally:
            # End of input or disconnect: the VM goes away with the session.
            await anyio.to_thread.run_sync(_close_engine, session)
            send_stream.close()


def _close_engine(session: Session) -> None:
    with session.lock:
        session.stop_event_pump()
        if session.engine is not None:
            session.engine.close()
            session.engine = None


async def serve_stdio(protocol_log: ProtocolLog) -> None:
    stdin = anyio.wrap_file(sys.stdin.buffer)
    stdout = anyio.wrap_file(sys.stdout.buffer)

    async def receive() -> bytes:
        return await stdin.read1(65536)

    async def write(data: bytes) -> None:
        await stdout.write(data)
        await stdout.flush()

    await run_session(receive, write, protocol_log)


async def serve_tcp(host: str, port: int, protocol_log: ProtocolLog,
                    ready: Callable[[int], None] | None = None) -> None:
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    actual = listener.extra(anyio.abc.SocketAttribute.local_port)
    print(f"dap-whpx: listening on {host}:{actual}", file=sys.stderr, flush=True)
    if ready is not None:
        ready(actual)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            async def receive() -> bytes:
                try:
                    return await stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return b""

            await run_session(receive, stream.send, protocol_log)

    await listener.serve(handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dap-whpx",
        description="Debug Adapter Protocol server for x86-64 guests on WHPX, KVM or "
                    "an emulated platform. Speaks DAP on stdio unless --port is given.")
    parser.add_argument("--port", type=int, help="listen for DAP clients on this TCP port")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on with --port (default 127.0.0.1, loopback)")
    parser.add_argument("--log", type=Path, help="append a protocol log (JSON lines) here")
    parser.add_argument("--version", action="version", version=f"dap-whpx {__version__}")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="dap-whpx: %(levelname)s: %(message)s")
    protocol_log = ProtocolLog(args.log)
    prepare_main_thread()
    try:
        if args.port is not None:
            anyio.run(serve_tcp, args.host, args.port, protocol_log)
        else:
            anyio.run(serve_stdio, protocol_log)
    except KeyboardInterrupt:
        return 130
    return 0
