"""Build a Machine for a guest ELF and put the debug engine on it."""

from __future__ import annotations

from pathlib import Path

from whpx_core.debug.engine import Engine
from whpx_core.machine.elf_loader import ElfImage, load_elf
from whpx_core.machine.vm import Machine
from whpx_core.platform.base import Platform


def launch(
    platform: Platform,
    program: str | Path | ElfImage,
    *,
    cpus: int = 1,
    memory_mib: int = 64,
    step_into_handlers: bool = False,
) -> Engine:
    """The VM is loaded and stopped at the entry point; nothing has executed yet."""
    image = program if isinstance(program, ElfImage) else load_elf(program)
    engines: list[Engine] = []
    machine = Machine(platform, cpus=cpus, memory_mib=memory_mib,
                      on_output=lambda data: engines[0].emit_output(data))
    try:
        machine.load(image)
    except Exception:
        machine.close()
        raise
    engine = Engine(machine, step_into_handlers=step_into_handlers)
    engines.append(engine)
    return engine
