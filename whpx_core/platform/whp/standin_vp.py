"""One stand-in virtual processor: an emulated vCPU run on a worker thread of its own.

WHPX ends WHvRunVirtualProcessor at a port or MMIO access and lets the VMM finish the
instruction (WHvEmulatorTry*Emulation) before the next run. Unicorn instead asks for the
value inside the instruction, from a hook. The worker bridges the two: the hook posts
the access as an exit and blocks; the emulator call answers it, the hook returns, the
instruction completes and the worker pauses right after it, so nothing runs between
WHvEmulatorTry*Emulation and the next WHvRunVirtualProcessor, as on WHPX.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from whpx_core.platform.emulated.platform import EmulatedVcpu
from whpx_core.platform.exits import CanceledExit, ExceptionExit


@dataclass(slots=True)
class Access:
    """A port or MMIO access the emulated CPU is blocked on."""

    kind: str  # "port" or "mmio"
    write: bool
    address: int
    size: int
    value: int = 0


class StandinVp:
    def __init__(self, vcpu: EmulatedVcpu) -> None:
        self.vcpu = vcpu
        self.exit_address = 0  # the buffer the last WHvRunVirtualProcessor was given
        self.access: Access | None = None  # reported, not answered yet
        self.running = False
        self.cancel_requested = False
        self.pending_debug = 0  # WHV_X64_PENDING_DEBUG_EXCEPTION
        self.window_wanted = False  # DeliverabilityNotifications.InterruptNotification
        self._to_worker: queue.Queue[tuple[str, int]] = queue.Queue()
        self._from_worker: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._worker_busy = False
        self._queued: tuple[str, Any] | None = None
        self._when_idle: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._loop, name=f"whp-standin-vp{vcpu.index}",
                                        daemon=True)
        self._thread.start()

    # -- worker thread --------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            command, _ = self._to_worker.get()
            if command == "stop":
                return
            try:
                exit_: Any = self.vcpu.run()
            except Exception as error:  # reported, never lost on a daemon thread
                exit_ = error
            self._from_worker.put(("exit", exit_))

    def on_access(self, access: Access) -> int:
        """Called from the emulated vCPU's hook, on the worker thread."""
        self._from_worker.put(("access", access))
        _, value = self._to_worker.get()
        if access.kind == "port":
            self.vcpu.cancel()  # our own thread: stops right after this instruction
        # MMIO: a stop from Unicorn's MMIO callback restarts the instruction, so the
        # vCPU runs on to its next exit instead (see `answer`).
        return value

    # -- caller side -----------------------------------------------------------------------
    def resume(self) -> tuple[str, Any]:
        """Run until the next exit or access: ("exit", Exit) or ("access", Access)."""
        if self._queued is not None:
            message, self._queued = self._queued, None
        else:
            if not self._worker_busy:
                self._worker_busy = True
                self._to_worker.put(("run", 0))
            message = self._from_worker.get()
        if message[0] == "exit":
            self._idle()
            if isinstance(message[1], Exception):
                raise message[1]
        return message

    def answer(self, value: int) -> None:
        """Finish the pending access. Returns once the emulated vCPU has stopped again:
        right after a port instruction, or (MMIO) at its next exit or access, which is
        then the next run's; either way nothing runs until the next run, as on WHPX."""
        port = self.access is not None and self.access.kind == "port"
        self.access = None
        self._to_worker.put(("answer", value))
        message = self._from_worker.get()
        if message[0] == "exit":
            self._idle()
            exit_ = message[1]
            if port and isinstance(exit_, CanceledExit):
                return  # our own pause
            if isinstance(exit_, ExceptionExit) and exit_.is_single_step:
                # A TF trap after the emulated instruction: WHPX's emulator finishes port
                # and MMIO instructions without one.
                return
        self._queued = message

    def when_idle(self, action: Callable[[], None]) -> None:
        """Run `action` once the emulated vCPU is outside run(): now, or when the access
        it is blocked in has been answered and its run has ended. (Changing its step
        flag in the middle of a slice would leave the step's TF in the guest.)"""
        if self._worker_busy:
            self._when_idle.append(action)
        else:
            action()

    def _idle(self) -> None:
        self._worker_busy = False
        actions, self._when_idle = self._when_idle, []
        for action in actions:
            action()

    def close(self) -> None:
        """Let a vCPU blocked in an access finish it (it holds the emulated platform's
        baton until then), then end the worker."""
        if self.access is not None:
            self.answer(0)
        self._to_worker.put(("stop", 0))
