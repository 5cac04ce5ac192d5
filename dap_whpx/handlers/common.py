"""Small helpers the handlers share: the engine of a launched session, ids, addresses."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dap_whpx.session import DapError

if TYPE_CHECKING:
    from dap_whpx.session import Session
    from whpx_core.debug.engine import Engine


def engine_of(session: Session) -> Engine:
    if session.engine is None:
        raise DapError("no program is running; launch one first")
    return session.engine


def vcpu_of(session: Session, thread_id: int) -> int:
    engine = engine_of(session)
    if not 1 <= thread_id <= engine.vcpu_count:
        raise DapError(f"there is no thread {thread_id} (threads are 1..{engine.vcpu_count})")
    return thread_id - 1


def thread_id(vcpu: int) -> int:
    return vcpu + 1


def parse_reference(session: Session, reference: str) -> tuple[int, bool]:
    """A memoryReference: '0x1000', '4096', a symbol, or 'phys:0x1000' for guest-physical
    memory. Returns (address, physical)."""
    text = reference.strip()
    physical = text.startswith("phys:")
    if physical:
        text = text[5:].strip()
    try:
        return int(text, 0), physical
    except ValueError:
        pass
    symbols = session.state.get("symbols")
    if symbols is not None and (address := symbols.address_of(text)) is not None:
        return address, physical
    raise DapError(f"'{reference}' is not an address, 'phys:' address or symbol")


def hex_address(address: int) -> str:
    return f"{address:#018x}"


def with_vm_stopped(handler: Callable[[Session, Any], Any]) -> Callable[[Session, Any], Any]:
    """Breakpoint changes while the guest runs: the VM stops for the change and goes on,
    and the client sees no stop (engine.run_stopped)."""

    @functools.wraps(handler)
    def wrapper(session: Session, args: Any) -> Any:
        engine = session.engine
        if engine is None or not engine.running:
            return handler(session, args)
        return engine.run_stopped(lambda: handler(session, args))

    return wrapper
