"""A whole VM in one place: RAM, devices, the loaded guest, and the run loop.

Read top to bottom, like kvm-hello-world: create the partition, map RAM, attach the
devices, load the ELF, set up each vCPU per the boot contract, then run one host thread
per vCPU and dispatch its exits until the VM ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from whpx_core.machine import boot
from whpx_core.machine.devices import lapic
from whpx_core.machine.devices.exit_port import ExitPort
from whpx_core.machine.devices.lapic import LocalApic
from whpx_core.machine.devices.serial import Serial
from whpx_core.machine.elf_loader import ElfImage
from whpx_core.machine.io_bus import IoBus
from whpx_core.machine.memory import MIB, allocate_ram
from whpx_core.platform.base import Platform
from whpx_core.platform.exits import (
    CanceledExit,
    ExceptionExit,
    Exit,
    HaltExit,
    InternalErrorExit,
    ShutdownExit,
)


class MachineError(Exception):
    """A configuration the machine cannot run (too little memory, image does not fit)."""


@dataclass(frozen=True)
class RunResult:
    reason: str  # "exit" (debug-exit port), "halted", "shutdown", "error", "stopped"
    exit_code: int
    message: str = ""


class Machine:
    def __init__(
        self,
        platform: Platform,
        *,
        cpus: int = 1,
        memory_mib: int = 64,
        on_output: Callable[[bytes], None] = lambda data: None,
    ) -> None:
        limit = platform.capabilities().max_vcpus
        if not 1 <= cpus <= limit:
            raise MachineError(f"cpus must be between 1 and {limit} on {platform.name}")
        ram_size = memory_mib * MIB
        if memory_mib < 1 or ram_size < boot.minimum_ram(cpus) + MIB:
            raise MachineError(f"memory must be at least {boot.minimum_ram(cpus) // MIB + 2} MiB")
        if ram_size > 3 * 1024 * MIB:
            raise MachineError("memory above 3072 MiB is not supported")
        self.platform = platform
        self.cpus = cpus
        self.ram_size = ram_size
        self.partition = platform.create_partition(cpus)
        self.ram = allocate_ram(ram_size)
        self.partition.map_memory(0, self.ram)
        self.partition.add_mmio_region(lapic.BASE, lapic.SIZE)
        self.apics = [
            LocalApic(i, self.partition.clock, self.partition.vcpu(i).request_interrupt)
            for i in range(cpus)
        ]
        self.bus = IoBus(Serial(on_output), ExitPort(self._on_exit_port), self.apics)
        self.partition.set_io_handler(self.bus)
        self._lock = threading.Lock()
        self._result: RunResult | None = None
        self._halted: set[int] = set()
        self._end_listeners: list[Callable[[RunResult], None]] = []
        self.image: ElfImage | None = None

    # -- loading ----------------------------------------------------------------------
    def load(self, image: ElfImage) -> None:
        lowest_stack, _ = boot.stack_range(self.cpus - 1, self.ram_size)
        for segment in image.segments:
            start, end = segment.address, segment.address + segment.memory_size
            if start < boot.BOOT_AREA_END:
                raise MachineError(
                    f"segment at {start:#x} overlaps the boot area below "
                    f"{boot.BOOT_AREA_END:#x}; link the guest at 0x100000 or higher")
            if end > lowest_stack:
                raise MachineError(
                    f"segment {start:#x}-{end:#x} does not fit in {self.ram_size // MIB} MiB "
                    f"of RAM (the vCPU stacks start at {lowest_stack:#x}); raise memory")
        boot.build_boot_structures(self.partition.write_memory, self.ram_size)
        for segment in image.segments:
            data = segment.data + bytes(segment.memory_size - len(segment.data))
            self.partition.write_memory(segment.address, data)
        for i in range(self.cpus):
            regs = boot.initial_registers(i, self.cpus, self.ram_size, image.entry)
            self.partition.vcpu(i).set_registers(regs)
        self.image = image

    # -- running ----------------------------------------------------------------------
    def run(self) -> RunResult:
        """Run every vCPU until the VM ends; returns why it ended."""
        threads = [
            threading.Thread(target=self._vcpu_loop, args=(i,), name=f"vcpu{i}", daemon=True)
            for i in range(self.cpus)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)  # wake up for KeyboardInterrupt
        except KeyboardInterrupt:
            self.end(RunResult("stopped", 130, "interrupted"))
            for thread in threads:
                thread.join()
        assert self._result is not None
        return self._result

    def stop(self) -> None:
        self.end(RunResult("stopped", 0, "stopped by the host"))

    def _vcpu_loop(self, index: int) -> None:
        vcpu = self.partition.vcpu(index)
        while self._result is None:
            try:
                exit_ = vcpu.run()
            except Exception as error:  # a platform bug must end the VM, not hang it
                self.end(RunResult("error", 3, f"vCPU {index}: {error!r}"))
                return
            if self._dispatch(index, exit_):
                return

    def _dispatch(self, index: int, exit_: Exit) -> bool:
        """Handle one exit; True when this vCPU's thread is done."""
        match exit_:
            case CanceledExit():
                return self._result is not None
            case HaltExit():
                with self._lock:
                    self._halted.add(index)
                    everyone = len(self._halted) == self.cpus
                if everyone:
                    self.end(RunResult("halted", 0, "every vCPU halted with interrupts off"))
                return True
            case ShutdownExit(rip=rip, reason=reason):
                self.end(RunResult("shutdown", 3, f"vCPU {index}: {reason} at {rip:#x}"))
            case InternalErrorExit(rip=rip, message=message, instruction_bytes=code):
                detail = f" (bytes {code.hex(' ')})" if code else ""
                self.end(RunResult("error", 3, f"vCPU {index} at {rip:#x}: {message}{detail}"))
            case ExceptionExit(vector=vector, rip=rip):
                self.end(RunResult("error", 3,
                                    f"vCPU {index}: unexpected exception {vector} at {rip:#x}"))
        return True

    def _on_exit_port(self, value: int) -> None:
        self.end(RunResult("exit", value & 0xFFFFFFFF))

    @property
    def result(self) -> RunResult | None:
        return self._result

    def add_end_listener(self, listener: Callable[[RunResult], None]) -> None:
        """Called once, on the thread that ended the VM (the debug engine listens)."""
        self._end_listeners.append(listener)

    def end(self, result: RunResult) -> None:
        """End the VM (first caller wins): timers stop, every vCPU is cancelled."""
        with self._lock:
            if self._result is not None:
                return
            self._result = result
        for apic in self.apics:
            apic.stop()
        for i in range(self.cpus):
            self.partition.vcpu(i).cancel()
        for listener in self._end_listeners:
            listener(result)

    def close(self) -> None:
        """End the VM and free it: the partition first, then the RAM it maps."""
        self.stop()
        self.partition.close()
        self.ram.close()
