"""readMemory, writeMemory, disassemble (capstone, with symbol labels)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from dap_whpx.handlers.common import engine_of, hex_address, parse_reference
from dap_whpx.handlers.source import debug_info, source_of, symbols_lock
from dap_whpx.protocol.messages import (
    DisassembleArguments,
    DisassembledInstruction,
    ReadMemoryArguments,
    Source,
    WriteMemoryArguments,
)
from dap_whpx.session import DapError, Session, capability, request
from whpx_core.debug.vm_memory import GuestMemoryError
from whpx_core.platform.base import PlatformError

MAX_READ = 1 << 20
_disassembler = None  # capstone, created on first use (keeps adapter start-up short)


def read_prefix(session: Session, address: int, count: int, physical: bool) -> bytes:
    """As many bytes from `address` as are readable, page by page."""
    engine = engine_of(session)
    out = bytearray()
    while len(out) < count:
        here = address + len(out)
        chunk = min(count - len(out), 0x1000 - (here & 0xFFF))
        try:
            if physical:
                out += engine.partition.read_memory(here, chunk)
            else:
                out += engine.read_memory(here, chunk)
        except (GuestMemoryError, PlatformError):
            break
    return bytes(out)


@capability(supportsReadMemoryRequest=True)
@request("readMemory", ReadMemoryArguments)
def read_memory(session: Session, args: ReadMemoryArguments) -> dict[str, Any]:
    address, physical = parse_reference(session, args.memoryReference)
    address += args.offset
    count = min(args.count, MAX_READ)
    data = read_prefix(session, address, count, physical)
    body: dict[str, Any] = {"address": ("phys:" if physical else "") + hex_address(address),
                            "data": base64.b64encode(data).decode()}
    if len(data) < args.count:
        body["unreadableBytes"] = args.count - len(data)
    return body


@capability(supportsWriteMemoryRequest=True)
@request("writeMemory", WriteMemoryArguments)
def write_memory(session: Session, args: WriteMemoryArguments) -> dict[str, Any]:
    engine = engine_of(session)
    address, physical = parse_reference(session, args.memoryReference)
    address += args.offset
    try:
        data = base64.b64decode(args.data, validate=True)
    except (binascii.Error, ValueError):
        raise DapError("writeMemory: 'data' is not valid base64") from None
    try:
        if physical:
            engine.write_physical(address, data)
        else:
            engine.write_memory(address, data)
    except (GuestMemoryError, PlatformError) as error:
        raise DapError(f"writeMemory: {error}") from None
    except Exception as error:
        raise DapError(f"writeMemory: {error}") from None
    session.after_response(lambda: session.event("memory", {
        "memoryReference": args.memoryReference, "offset": args.offset,
        "count": len(data)}))
    return {"bytesWritten": len(data)}


def _decode(session: Session, start: int, size: int) -> list[tuple[int, bytes, str]]:
    global _disassembler
    if _disassembler is None:
        import capstone

        _disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    data = read_prefix(session, start, size, False)
    out = []
    for address, length, mnemonic, operands in _disassembler.disasm_lite(data, start):
        text = f"{mnemonic} {operands}".strip()
        out.append((address, data[address - start : address - start + length], text))
    return out


def _instructions_before(session: Session, address: int, count: int) -> list[tuple]:
    """`count` instructions ending just before `address`: decode forward from a little
    earlier and keep a start whose instruction boundaries land exactly on `address`."""
    for back in range(count * 15 + 15, 0, -1):
        decoded = [i for i in _decode(session, address - back, back) if i[0] < address]
        if decoded and decoded[-1][0] + len(decoded[-1][1]) == address:
            return decoded[-count:]
    return []


@capability(supportsDisassembleRequest=True)
@request("disassemble", DisassembleArguments)
def disassemble(session: Session, args: DisassembleArguments) -> dict[str, Any]:
    address, physical = parse_reference(session, args.memoryReference)
    if physical:
        raise DapError("disassemble takes a guest-virtual address")
    address += args.offset
    symbols = session.state["symbols"]
    wanted = min(args.instructionCount, 4096)
    before: list[tuple] = []
    if args.instructionOffset < 0:
        before = _instructions_before(session, address, -args.instructionOffset)
    after = _decode(session, address, 16 * (wanted + 1)) if args.instructionOffset < wanted \
        else []
    if args.instructionOffset > 0:
        after = after[args.instructionOffset:]
    rows = [*before, *after]
    out = []
    cursor = rows[0][0] if rows else address
    info = debug_info(session)
    for addr, raw, text in rows[:wanted]:
        found = symbols.lookup(addr) if args.resolveSymbols else None
        line = None
        if info is not None:
            with symbols_lock:
                line = info.line_for_address(addr)
        out.append(DisassembledInstruction(
            address=hex_address(addr), instructionBytes=raw.hex(" "), instruction=text,
            symbol=found[0] if found else None,
            location=Source(**source_of(line.file)) if line else None,
            line=line.line if line else None).dump())
        cursor = addr + len(raw)
    while len(out) < wanted:  # unreadable or undecodable: keep the count the client asked
        out.append(DisassembledInstruction(address=hex_address(cursor), instruction="??",
                                           presentationHint="invalid").dump())
        cursor += 1
    return {"instructions": out}
