"""The debug engine: all-stop run control over a Machine, with INT1 breakpoints,
transparent single steps and exclusive step-over.

Threads: every vCPU has a host thread that runs guest code between `resume()` and the
next stop. A stop-worthy exit on any vCPU cancels the others; the last vCPU thread to
park takes the breakpoint bytes out of memory and only then reports the stop, so a
client always sees a fully stopped VM with clean memory. Commands (`resume`,
`step_instruction`, register and memory access) are called from any one client thread;
`step_instruction` runs on that thread, so a step costs no thread hand-over.

An exit on a second vCPU that arrives while the VM is stopping is not lost: it is kept
as that vCPU's pending stop and reported at the next resume, without executing anything.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from whpx_core.debug import stepping
from whpx_core.debug.breakpoints import INT1, BreakpointTable
from whpx_core.debug.events import (
    Breakpoint,
    BreakpointVerified,
    EngineEvent,
    Exited,
    LogMessage,
    Output,
    Stopped,
    StopReason,
)
from whpx_core.debug.line_step import LineStep, Purpose, StepKind, StepSymbols, Verdict, plan_ranges
from whpx_core.debug.vm_memory import GuestMemoryError, VmMemory
from whpx_core.machine.vm import Machine, RunResult
from whpx_core.platform import affinity
from whpx_core.platform.base import HwBreakpoint, PlatformError, Vcpu
from whpx_core.platform.delivery import CpuView, Event, TripleFault, deliver
from whpx_core.platform.exits import (
    DR6_BS,
    CanceledExit,
    ExceptionExit,
    Exit,
    HaltExit,
    InternalErrorExit,
    ShutdownExit,
    Vector,
)
from whpx_core.platform.registers import RFLAGS_TF, Reg, RegValue

# Internal steps allowed while stepping over an exception handler before giving up and
# stopping inside it (a handler that never returns, e.g. a panic loop).
MAX_HANDLER_STEPS = 1_000_000


_VECTOR_NAMES = {0: "#DE divide error", 1: "#DB debug", 3: "#BP breakpoint (INT3)",
                 6: "#UD invalid opcode", 8: "#DF double fault",
                 13: "#GP general protection", 14: "#PF page fault"}


def _describe_exception(exit_: ExceptionExit) -> str:
    name = _VECTOR_NAMES.get(exit_.vector, f"exception {exit_.vector}")
    text = f"{name} at {exit_.rip:#x}"
    if exit_.error_code is not None:
        text += f", error code {exit_.error_code:#x}"
    if exit_.cr2 is not None:
        text += f", address {exit_.cr2:#x}"
    return text


_T = TypeVar("_T")


_STEP_REGISTERS = [Reg.RIP, Reg.RSP, Reg.RFLAGS]  # read around every step (never mutated)


@dataclass(eq=False)
class _StoppedCall:
    action: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class EngineError(Exception):
    """A command that cannot be carried out in the engine's current state."""


class _Keep:
    """Classification result: the vCPU keeps running (the exit was handled)."""


class _Park:
    """Classification result: this vCPU stops, with nothing to report."""


KEEP, PARK = _Keep(), _Park()


@dataclass(frozen=True)
class _Silent:
    """A breakpoint hit nobody wants reported (a false condition, a logpoint, another
    frame's or vCPU's temporary breakpoint): the VM stops, steps over it, and goes on."""

    vcpu: int
    rip: int


@dataclass(frozen=True)
class _StepArrival:
    """The vCPU of the line step in progress reached one of its temporary breakpoints."""

    vcpu: int
    rip: int


_Internal = _Silent | _StepArrival
Action = _Keep | _Park | Stopped | _Internal

# Owner of the line step's temporary breakpoints in the breakpoint table.
_STEP_OWNER = "line-step"

_GPRS = (Reg.RAX, Reg.RBX, Reg.RCX, Reg.RDX, Reg.RSI, Reg.RDI, Reg.RBP, Reg.RSP, Reg.R8,
         Reg.R9, Reg.R10, Reg.R11, Reg.R12, Reg.R13, Reg.R14, Reg.R15, Reg.RIP)


@dataclass(frozen=True)
class HitContext:
    """What a breakpoint condition or log message sees: the vCPU that hit, at the hit."""

    vcpu: int
    rip: int
    get_registers: Callable[[Iterable[Reg]], list[RegValue]]
    read_memory: Callable[[int, int], bytes]

    def frame_registers(self) -> dict[str, int]:
        """The general registers by lowercase name ('rip', 'rsp', ...), for unwinding."""
        return _by_name(self.get_registers(_GPRS))


def _by_name(values: list[RegValue]) -> dict[str, int]:
    return {reg.name.lower(): int(v) for reg, v in zip(_GPRS, values, strict=True)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class BreakpointOptions:
    """Conditions evaluated inside the engine at the hit, on the vCPU's own thread, so a
    breakpoint that does not stop costs no round trip to the client. VS Code's order:
    `condition` first; only a hit that passes it counts; then `hit_condition(count)`;
    then a logpoint (`log`) prints and goes on instead of stopping."""

    condition: Callable[[HitContext], bool] | None = None
    hit_condition: Callable[[int], bool] | None = None
    log: Callable[[HitContext], str] | None = None


@dataclass(eq=False)
class _VcpuThread:
    index: int
    vcpu: Vcpu
    # Guest-virtual memory through this vCPU's page tables.
    read: Callable[[int, int], bytes]
    write: Callable[[int, bytes], None]
    go: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    pending: Stopped | _Internal | None = None  # a stop not acted on yet
    halted: bool = False  # HLT with interrupts off: never runs again
    # Where this vCPU was last reported stopped. Resuming from there steps over a
    # breakpoint; a vCPU merely cancelled in front of one has not hit it yet, and will.
    reported_rip: int | None = None
    rip_after_step: int | None = None  # saves a register read per step
    # An intercepted exception reported to the user: the guest gets it when resumed.
    owed_exception: tuple[int, int | None, int] | None = None  # vector, error, RIP advance


class Engine:
    def __init__(self, machine: Machine, *, step_into_handlers: bool = False) -> None:
        self.machine = machine
        self.partition = machine.partition
        self.partition_capabilities = machine.platform.capabilities()
        self.memory = VmMemory(self.partition)
        self.table = BreakpointTable()
        self.events: queue.SimpleQueue[EngineEvent] = queue.SimpleQueue()
        self.output = bytearray()  # all guest serial output so far
        self.step_into_handlers = step_into_handlers
        self._lock = threading.RLock()  # `with _lock` where nothing waits: cheaper
        self._cond = threading.Condition(self._lock)
        self._breakpoints: dict[int, Breakpoint] = {}
        self._options: dict[int, BreakpointOptions] = {}
        self._hit_counts: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._line_step: LineStep | None = None
        self._step_planted: set[int] = set()  # the line step's temporary breakpoints
        self._stopped_calls: list[_StoppedCall] = []
        self._resume_only: int | None = None  # the scope of the last resume
        self._running = 0  # vCPU threads currently out of the parked state
        self._stopping = False
        self._stop: Stopped | _Internal | None = None  # the stop being reported
        self._pausing = False  # pause() asked: reported as a pause unless a stop came first
        self._ended: RunResult | None = None
        self._exited_reported = False
        self._closing = False
        self._exception_stops: frozenset[int] = frozenset()
        self._intercepts: frozenset[int] | None = None  # as last given to the platform
        slots = self.partition_capabilities.hardware_breakpoints
        self._hw_slots: list[tuple[Breakpoint, HwBreakpoint] | None] = [None] * slots
        self._threads = [_VcpuThread(i, self.partition.vcpu(i), self._reader(i), self._writer(i))
                         for i in range(machine.cpus)]
        machine.add_end_listener(self._on_machine_end)
        # Before the vCPU threads start, so that they inherit it. Only where one thing
        # executes at a time anyway: on one vCPU, or on the emulated platform's baton.
        one_at_a_time = self.partition_capabilities.serial_execution or machine.cpus == 1
        self._pin = affinity.Pin() if one_at_a_time else None
        for t in self._threads:
            t.thread = threading.Thread(target=self._thread_main, args=(t,),
                                        name=f"engine-vcpu{t.index}", daemon=True)
            t.thread.start()

    # -- events ---------------------------------------------------------------------------
    def emit_output(self, data: bytes) -> None:
        """Serial output callback: give it to Machine(on_output=...)."""
        self.output += data
        self.events.put(Output(data))

    def _emit(self, event: EngineEvent) -> None:
        if isinstance(event, Stopped):
            self._threads[event.vcpu].reported_rip = event.rip
            if self._line_step is not None:
                self._end_line_step()
        self.events.put(event)

    def wait_event(self, timeout: float | None = None) -> EngineEvent:
        return self.events.get(timeout=timeout)

    def wait_stop(self, timeout: float | None = None) -> Stopped | Exited:
        """Next Stopped or Exited event (Output and breakpoint events are skipped)."""
        while True:
            event = self.events.get(timeout=timeout)
            if isinstance(event, Stopped | Exited):
                return event

    # -- state ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running > 0

    @property
    def ended(self) -> RunResult | None:
        return self._ended

    @property
    def vcpu_count(self) -> int:
        return len(self._threads)

    def is_halted(self, vcpu: int) -> bool:
        return self._threads[vcpu].halted

    def _require_stopped(self) -> None:
        if self._running:
            raise EngineError("the VM is running; pause it first")
        if self._ended is not None:
            raise EngineError(f"the VM has ended ({self._ended.reason})")

    # -- breakpoints ------------------------------------------------------------------------
    def add_breakpoint(self, address: int,
                       options: BreakpointOptions | None = None) -> Breakpoint:
        """A user software breakpoint (INT1 planted at `address` while running)."""
        with self._cond:
            self._require_not_running()
            bp = Breakpoint(next(self._ids), address)
            self._breakpoints[bp.id] = bp
            if options is not None and options != BreakpointOptions():
                self._options[bp.id] = options
            self.table.add(address, bp.id)
            return bp

    def hit_count(self, breakpoint_id: int) -> int:
        """Hits that passed the breakpoint's condition (all hits when it has none)."""
        return self._hit_counts.get(breakpoint_id, 0)

    def add_hardware_breakpoint(self, address: int, kind: str = "execute",
                                size: int = 1) -> Breakpoint:
        """A debug-register breakpoint: `kind` "execute", "write" or "readwrite", `size`
        1/2/4/8 bytes, aligned. Raises EngineError when the platform has no free slot or
        refuses the kind or size, with the platform's reason."""
        with self._cond:
            self._require_not_running()
            if not self._hw_slots:
                raise EngineError("this platform has no hardware breakpoints")
            if kind != "execute" and not self.partition_capabilities.hardware_watchpoints:
                raise EngineError("this platform's hardware watchpoints do not fire "
                                  "(measured); use a software breakpoint instead")
            free = next((n for n, s in enumerate(self._hw_slots) if s is None), None)
            if free is None:
                raise EngineError(f"all {len(self._hw_slots)} hardware breakpoint slots "
                                  f"are in use")
            bp = Breakpoint(next(self._ids), address, verified=True)
            slots = list(self._hw_slots)
            slots[free] = (bp, HwBreakpoint(address, kind, size))
            try:  # the platform validates (alignment, size); no vCPU runs now
                self.partition.set_hardware_breakpoints([s and s[1] for s in slots])
            except PlatformError as error:
                self.partition.set_hardware_breakpoints(
                    [s and s[1] for s in self._hw_slots])
                raise EngineError(str(error)) from None
            self._hw_slots = slots
            self._breakpoints[bp.id] = bp
            return bp

    def _remove_hardware(self, breakpoint_id: int) -> bool:
        for n, slot in enumerate(self._hw_slots):
            if slot is not None and slot[0].id == breakpoint_id:
                self._hw_slots[n] = None
                self.partition.set_hardware_breakpoints([s and s[1] for s in self._hw_slots])
                del self._breakpoints[breakpoint_id]
                self._forget_pending_hits(breakpoint_id)
                return True
        return False

    def remove_breakpoint(self, breakpoint_id: int) -> None:
        with self._cond:
            self._require_not_running()
            if self._remove_hardware(breakpoint_id):
                return
            bp = self._breakpoints.pop(breakpoint_id, None)
            self._options.pop(breakpoint_id, None)
            self._hit_counts.pop(breakpoint_id, None)
            if bp is not None:
                self.table.remove(bp.address, bp.id, self.memory)
                self._forget_pending_hits(bp.id)

    def _forget_pending_hits(self, breakpoint_id: int) -> None:
        """A hit caught while the VM was stopping, of a breakpoint removed since, is not
        reported: the vCPU never ran the instruction under it, and will run it now."""
        for t in self._threads:
            stop = t.pending
            if not isinstance(stop, Stopped) or breakpoint_id not in stop.breakpoints:
                continue
            left = tuple(b for b in stop.breakpoints if b != breakpoint_id)
            t.pending = dataclasses.replace(stop, breakpoints=left) if left else None

    def breakpoints(self) -> list[Breakpoint]:
        return list(self._breakpoints.values())

    def is_verified(self, breakpoint_id: int) -> bool:
        bp = self._breakpoints.get(breakpoint_id)
        if bp is None:
            return False
        if any(s is not None and s[0].id == breakpoint_id for s in self._hw_slots):
            return True
        entry = self.table.get(bp.address)
        return entry is not None and entry.gpa is not None

    def _require_not_running(self) -> None:
        if self._running:
            raise EngineError("breakpoints can only change while the VM is stopped")

    def run_stopped(self, action: Callable[[], _T], timeout: float = 10.0) -> _T:
        """Call `action()` with every vCPU stopped and return its result. While the VM
        runs, it is stopped for this and resumed afterwards, and no stop is reported:
        what a debugger does when the user sets a breakpoint in a running program."""
        with self._cond:
            if not self._running:
                return action()
            call = _StoppedCall(action)
            self._stopped_calls.append(call)
            self._request_stop_locked()
        if not call.done.wait(timeout):
            raise EngineError("the VM did not stop in time to apply the change")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _run_stopped_calls(self) -> bool:
        """At a stop: run the calls waiting for one. True when there were any."""
        calls, self._stopped_calls = self._stopped_calls, []
        for call in calls:
            try:
                call.result = call.action()
            except Exception as error:  # handed to the caller's thread
                call.error = error
            finally:
                call.done.set()
        return bool(calls)

    # -- registers and memory ---------------------------------------------------------------
    def get_registers(self, vcpu: int, names: Iterable[Reg]) -> list[RegValue]:
        with self._cond:
            self._require_not_running()
            return self._threads[vcpu].vcpu.get_registers(list(names))

    def set_registers(self, vcpu: int, values: Mapping[Reg, RegValue]) -> None:
        with self._cond:
            self._require_stopped()
            self._threads[vcpu].vcpu.set_registers(values)

    def read_memory(self, address: int, size: int, vcpu: int = 0) -> bytes:
        """Guest-virtual read; planted breakpoint bytes read as the original bytes."""
        data = self.memory.read_virtual(address, size, vcpu)
        return self.table.original_bytes(address, data)

    def write_memory(self, address: int, data: bytes, vcpu: int = 0) -> None:
        with self._cond:
            self._require_stopped()
            self.memory.write_virtual(address, data, vcpu)
            for offset, value in enumerate(data):
                self.table.update_original(address + offset, value)

    def write_physical(self, gpa: int, data: bytes) -> None:
        """Guest-physical write; breakpoints planted over these bytes keep the new ones
        as their original bytes."""
        with self._cond:
            self._require_stopped()
            self.partition.write_memory(gpa, data)
            for entry in self.table:
                if entry.gpa is not None and gpa <= entry.gpa < gpa + len(data):
                    self.table.update_original(entry.address, data[entry.gpa - gpa])

    # -- run control ------------------------------------------------------------------------
    def resume(self, only: int | None = None) -> None:
        """Continue every vCPU (or only vCPU `only`, the others staying halted). Returns
        at once; the stop arrives as an event."""
        with self._cond:
            if self._report_after_end() is not None:
                return
            self._require_stopped()
            self._resume_locked(only)

    def _report_after_end(self) -> Stopped | Exited | None:
        """The VM ended while stopping for a stop that came first (a vCPU hit a breakpoint
        just before another one wrote the exit port): that stop was reported, and now
        any other caught meanwhile, then the end. Returns what was reported."""
        if self._ended is None or self._running or self._exited_reported:
            return None
        for t in self._threads:
            stop, t.pending = t.pending, None
            if isinstance(stop, Stopped):
                self._emit(stop)
                return stop
        return self._report_end()

    def _resume_locked(self, only: int | None) -> None:
        self._resume_only = only
        chosen = self._threads if only is None else [self._threads[only]]
        for t in chosen:
            if t.pending is None:
                continue
            stop, t.pending = t.pending, None
            if isinstance(stop, Stopped):
                self._emit(stop)  # an earlier simultaneous hit: report it, run nothing
                return
            if isinstance(stop, _StepArrival) and self._line_step is not None:
                self._on_internal_stop(stop)
                return
            t.reported_rip = stop.rip  # a silent hit: step over it below
        self._arm()
        for t in chosen:
            rip = self._rip(t)
            if not t.halted and rip == t.reported_rip and self.table.is_planted_at(rip):
                action = self._exclusive_step(t)
                if isinstance(action, Stopped):
                    self._finish_synchronous(action)
                    return
        for t in self._threads:
            t.reported_rip = None
        runnable = [t for t in chosen if not t.halted]
        if not runnable:
            self.table.disarm(self.memory)
            if self._end_if_all_halted():
                self._report_end()
            else:
                self._emit(self._halted_stop(chosen[0], StopReason.PAUSE))
            return
        self._stopping = False
        self._running = len(runnable)
        for t in runnable:
            t.go.set()

    # -- source-line steps ------------------------------------------------------------------
    def step_line(self, vcpu: int, kind: StepKind, symbols: StepSymbols, *,
                  single_thread: bool = False) -> None:
        """next / stepIn / stepOut of vCPU `vcpu` at source-line granularity (line_step.py).
        Returns at once; the `step` stop arrives as an event. The other vCPUs run too
        unless `single_thread`; a user breakpoint hit meanwhile (on any vCPU) is reported
        instead and ends the step, as does `pause`."""
        with self._cond:
            if self._report_after_end() is not None:
                return
            self._require_stopped()
            t = self._threads[vcpu]
            if t.pending is not None and isinstance(t.pending, Stopped):
                stop, t.pending = t.pending, None
                self._emit(stop)
                return
            if t.halted:
                self._emit(self._halted_stop(t, StopReason.STEP))
                return
            only = vcpu if single_thread else None
            regs = self._frame_registers(t)
            read = self._reader(vcpu)
            cfa = symbols.frame_cfa(regs, read)
            if kind is StepKind.OUT:
                caller = symbols.caller(regs, read)
                if caller is None:
                    self._emit(Stopped(StopReason.STEP, vcpu, regs["rip"],
                                       description="no caller frame to step out to"))
                    return
                step = LineStep(vcpu, kind, symbols, cfa, plan_ranges([], read, kind),
                                targets={caller[0]: caller[1]}, finishing=True)
                self._start_line_step(step, t, only)
                return
            ranges = symbols.line_ranges(regs["rip"])
            if not self._step_inside_line_step(t):
                return
            if not ranges:  # no line info here: one instruction is the step
                self._emit(Stopped(StopReason.STEP, vcpu, self._rip(t)))
                return
            self._line_step = LineStep(vcpu, kind, symbols, cfa,
                                       plan_ranges(ranges, read, kind),
                                       line=symbols.line_key(regs["rip"]))
            self._continue_line_step(t, only)

    def _start_line_step(self, step: LineStep, t: _VcpuThread, only: int | None) -> None:
        self._line_step = step
        self._replant_line_step()
        t.reported_rip = self._rip(t)  # sitting on a temporary breakpoint: step over it
        self._resume_locked(only)

    def _continue_line_step(self, t: _VcpuThread, only: int | None) -> None:
        """The stepping vCPU is stopped somewhere (after a step or an arrival): decide,
        stepping the instructions whose destination only a step can tell, then run."""
        step = self._line_step
        assert step is not None
        read = self._reader(t.index)
        while True:
            regs = self._frame_registers(t)
            pc = regs["rip"]
            verdict = step.look(pc, step.symbols.frame_cfa(regs, read),
                                lambda regs=regs: int.from_bytes(read(regs["rsp"], 8), "little"),
                                read)
            if verdict is Verdict.STOP:
                self._emit(Stopped(StopReason.STEP, t.index, pc))
                return
            if verdict is not Verdict.STEP_ONE and (
                    pc in step.targets or step.plan.breakpoints.get(pc) is not Purpose.STEP):
                break
            if not self._step_inside_line_step(t):
                return
        self._start_line_step(step, t, only)

    def _step_inside_line_step(self, t: _VcpuThread) -> bool:
        """One instruction of the stepping vCPU; False when that ended the step (a stop
        was reported, or the VM ended)."""
        self._arm()
        action = self._step(t, over_handlers=not self.step_into_handlers)
        if isinstance(action, Stopped) or self._ended is not None:
            self._finish_synchronous(action if isinstance(action, Stopped) else
                                     Stopped(StopReason.STEP, t.index, self._rip(t)))
            return False
        self.table.disarm(self.memory)
        return True

    def _replant_line_step(self) -> None:
        step = self._line_step
        assert step is not None and not self.table.armed
        wanted = step.breakpoint_addresses()
        for address in self._step_planted - wanted:
            self.table.remove(address, _STEP_OWNER, self.memory)
        for address in wanted - self._step_planted:
            self.table.add(address, _STEP_OWNER)
        self._step_planted = wanted

    def _end_line_step(self) -> None:
        if self._line_step is None:
            return
        self._line_step = None
        for address in self._step_planted:
            self.table.remove(address, _STEP_OWNER, self.memory)
        self._step_planted = set()

    def _on_internal_stop(self, stop: _Internal) -> None:
        """Every vCPU has stopped for a hit that is not reported: act on it, go on."""
        t = self._threads[stop.vcpu]
        step = self._line_step
        if isinstance(stop, _Silent) or step is None:
            t.reported_rip = stop.rip
            self._resume_locked(self._resume_only)
            return
        must_step = stop.rip not in step.targets and \
            step.plan.breakpoints.get(stop.rip) is Purpose.STEP
        if must_step and not self._step_inside_line_step(t):
            return
        self._continue_line_step(t, self._resume_only)

    def _frame_registers(self, t: _VcpuThread) -> dict[str, int]:
        return _by_name(t.vcpu.get_registers(_GPRS))

    def frame_registers(self, vcpu: int) -> dict[str, int]:
        """The general registers and RIP by lowercase name ('rip', 'rsp', ...): what the
        symbols layer unwinds from."""
        with self._cond:
            self._require_not_running()
            return self._frame_registers(self._threads[vcpu])

    def _reader(self, vcpu: int) -> Callable[[int, int], bytes]:
        return lambda address, size: self.read_memory(address, size, vcpu)

    def pause(self) -> None:
        """Stop every vCPU; reported as a `pause` stop (unless another stop wins)."""
        with self._cond:
            if not self._running or self._stopping:
                return
            self._pausing = True
            self._request_stop_locked()

    def step_instruction(self, vcpu: int) -> Stopped | Exited:
        """Execute one instruction of one vCPU with the others halted; returns (and
        emits) the resulting stop."""
        with self._lock:
            if self._ended is not None or self._running:
                if (reported := self._report_after_end()) is not None:
                    return reported
                self._require_stopped()
            t = self._threads[vcpu]
            if t.pending is not None:
                stop, t.pending = t.pending, None
                self._emit(stop)
                return stop
            if t.halted:
                stop = self._halted_stop(t, StopReason.STEP)
                self._emit(stop)
                return stop
            self._arm()
            t.rip_after_step = None
            action = self._step(t, over_handlers=not self.step_into_handlers)
            if not isinstance(action, Stopped):
                rip = t.rip_after_step if t.rip_after_step is not None else self._rip(t)
                action = Stopped(StopReason.STEP, vcpu, rip)
            return self._finish_synchronous(action)

    def _finish_synchronous(self, stop: Stopped) -> Stopped | Exited:
        if self.table.armed:
            self.table.disarm(self.memory)
        if self._ended is not None:
            return self._report_end()
        self._emit(stop)
        return stop

    def _report_end(self) -> Exited:
        assert self._ended is not None
        event = Exited(self._ended.exit_code, self._ended.reason, self._ended.message)
        if not self._exited_reported:
            self._exited_reported = True
            self._emit(event)
        return event

    def set_exception_stops(self, vectors: Iterable[int]) -> None:
        """Stop when the guest raises one of these exceptions (before its handler runs);
        the guest still gets the exception when resumed."""
        vectors = frozenset(vectors)
        allowed = self.partition_capabilities.interceptable_vectors
        if not vectors <= allowed:
            raise EngineError(f"this platform cannot stop on exception vectors "
                              f"{sorted(vectors - allowed)} (only {sorted(allowed)})")
        with self._cond:
            self._require_not_running()
            self._exception_stops = vectors

    def _arm(self) -> None:
        vectors = self._exception_stops
        if len(self.table) or any(self._hw_slots):
            vectors = vectors | {Vector.DB}
        if vectors != self._intercepts:  # only while no vCPU runs: now
            self.partition.set_exception_intercepts(vectors)
            self._intercepts = vectors
        for t in self._threads:
            if t.owed_exception is not None:
                vector, error_code, advance = t.owed_exception
                t.owed_exception = None
                if advance:
                    t.vcpu.set(Reg.RIP, t.vcpu.get_int(Reg.RIP) + advance)
                t.vcpu.inject_exception(vector, error_code)
        for entry in self.table.arm(self.memory):
            for owner in entry.owners:
                if isinstance(owner, int) and owner in self._breakpoints:
                    self._emit(BreakpointVerified(owner, entry.address))

    def _rip(self, t: _VcpuThread) -> int:
        return t.vcpu.get_int(Reg.RIP)

    # -- stepping ---------------------------------------------------------------------------
    def _step_primitive(self, t: _VcpuThread, rip: int) -> Exit:
        """One instruction with the platform's step primitive. A cancel that arrives
        meanwhile is deferred until the step is done (the seed's rule)."""
        entry = self.table.get(rip) if self.table.is_planted_at(rip) else None
        if entry is not None:
            assert entry.gpa is not None and entry.original is not None
            self.memory.write_step_byte(entry.gpa, entry.original)  # others halted: safe
        t.vcpu.set_single_step(True)
        try:
            while True:
                exit_ = t.vcpu.run()
                if not isinstance(exit_, CanceledExit) or self._ended is not None:
                    return exit_
        finally:
            t.vcpu.set_single_step(False)
            if entry is not None:
                assert entry.gpa is not None
                self.memory.write_step_byte(entry.gpa, INT1)

    def _exclusive_step(self, t: _VcpuThread) -> Action:
        """Step a vCPU off the armed breakpoint it sits on, every other vCPU halted."""
        return self._step(t, over_handlers=True)

    def _step(self, t: _VcpuThread, *, over_handlers: bool) -> Action:
        vcpu = t.vcpu
        rip, rsp, rflags = vcpu.get_registers(_STEP_REGISTERS)
        assert isinstance(rip, int) and isinstance(rsp, int) and isinstance(rflags, int)
        read, write = t.read, t.write
        code = self._code_at(rip, t.index)
        before = stepping.before_step(stepping.classify(code), rip, rsp, rflags, read)
        exit_ = self._step_primitive(t, rip)
        if not (isinstance(exit_, ExceptionExit) and exit_.is_single_step):
            return self._classify(t, exit_, stepping=True)
        t.rip_after_step, new_rsp, new_rflags = vcpu.get_registers(_STEP_REGISTERS)
        assert isinstance(new_rsp, int) and isinstance(new_rflags, int)
        frame = stepping.entered_handler(before, new_rsp, read)
        if frame is None:
            fixed = stepping.after_step(before, new_rsp, new_rflags, read, write)
        else:
            # The step delivered an event: the handler runs with TF clear, and the TF in
            # the frame is the guest's own if it was stepping itself, else ours.
            fixed = new_rflags & ~RFLAGS_TF
            if not before.tf_at_start:
                stepping.clear_tf_in_frame(frame, read, write)
        if fixed != new_rflags:
            vcpu.set(Reg.RFLAGS, fixed)
        if frame is None and before.tf_at_start and \
                before.decoded.kind is not stepping.StepClass.SOFTWARE_INTERRUPT:
            # The guest's own single-step trap is due now. Deliver it inside this step:
            # left pending across a reported stop, the next step would take its delivery
            # for the instruction at RIP.
            frame = self._deliver_guest_single_step(t)
            if frame is None:
                return Stopped(StopReason.EXCEPTION, t.index, self._rip(t),
                               description="triple fault delivering the guest's #DB")
            t.rip_after_step = None  # RIP is now the handler's
        if frame is None or not over_handlers:
            return KEEP
        t.rip_after_step = None
        return self._step_out_of_handler(t, frame)

    def _deliver_guest_single_step(self, t: _VcpuThread) -> stepping.HandlerFrame | None:
        """Deliver the #DB owed to a guest that set TF itself through its IDT, in software
        (platform/delivery.py), DR6.BS set as the CPU does: the vCPU is then on the
        handler's first instruction."""
        vcpu = t.vcpu
        rip, dr6 = vcpu.get_registers([Reg.RIP, Reg.DR6])
        assert isinstance(rip, int) and isinstance(dr6, int)
        vcpu.set(Reg.DR6, dr6 | DR6_BS)
        view = CpuView(vcpu.get_registers, vcpu.set_registers,
                       self.partition.read_memory, self.partition.write_memory)
        try:
            deliver(view, Event(Vector.DB, rip))
        except TripleFault:
            return None
        return stepping.HandlerFrame(rip_slot=vcpu.get_int(Reg.RSP), return_rip=rip)

    def _step_out_of_handler(self, t: _VcpuThread, frame: stepping.HandlerFrame) -> Action:
        """Step (inside the engine) until the IRETQ that pops `frame` has executed."""
        for _ in range(MAX_HANDLER_STEPS):
            rip, rsp = t.vcpu.get_registers([Reg.RIP, Reg.RSP])
            assert isinstance(rip, int) and isinstance(rsp, int)
            leaving = stepping.returns_from(frame, self._code_at(rip, t.index), rsp)
            if self.table.is_planted_at(rip) and not leaving:
                entry = self.table.get(rip)
                assert entry is not None
                hit = self._planted_hit(t, rip, entry.owners)
                if isinstance(hit, Stopped):
                    return hit
            action = self._step(t, over_handlers=True)
            if action is not KEEP or leaving:
                return action
        return Stopped(StopReason.STEP, t.index, self._rip(t),
                       description="stopped inside an exception handler that did not return")

    def _code_at(self, rip: int, vcpu: int) -> bytes:
        try:
            return self.read_memory(rip, 16, vcpu)
        except GuestMemoryError:
            return b""

    def _writer(self, vcpu: int) -> Callable[[int, bytes], None]:
        return lambda address, data: self.memory.write_virtual(address, data, vcpu)

    # -- classification: the one place that decides why a vCPU stopped --------------------
    def _planted_hit(self, t: _VcpuThread, rip: int,
                     owners: set[Hashable]) -> Stopped | _Internal:
        """A vCPU executed one of our INT1s (on its own thread; others may still run).
        Conditions and logpoints are decided here; a hit that no owner wants reported
        becomes a silent stop-and-go."""
        stopping: list[int] = []
        context: HitContext | None = None
        for owner in sorted(o for o in owners if isinstance(o, int)):
            options = self._options.get(owner)
            if options is None:
                self._count_hit(owner)
                stopping.append(owner)
                continue
            if context is None:
                context = HitContext(t.index, rip, t.vcpu.get_registers,
                                     self._reader(t.index))
            try:
                if options.condition is not None and not options.condition(context):
                    continue
                count = self._count_hit(owner)
                if options.hit_condition is not None and not options.hit_condition(count):
                    continue
                if options.log is not None:
                    self.events.put(LogMessage(owner, t.index, options.log(context)))
                    continue
            except Exception as error:  # a condition that cannot be evaluated stops
                return Stopped(StopReason.BREAKPOINT, t.index, rip, (owner,),
                               description=f"breakpoint condition failed: {error}")
            stopping.append(owner)
        if stopping:
            return Stopped(StopReason.BREAKPOINT, t.index, rip, tuple(stopping))
        step = self._line_step
        if step is not None and _STEP_OWNER in owners and t.index == step.vcpu:
            want = step.targets.get(rip, step.start_cfa)
            regs = self._frame_registers(t)
            if step.frame_ok(step.symbols.frame_cfa(regs, self._reader(t.index)), want):
                return _StepArrival(t.index, rip)
        return _Silent(t.index, rip)

    def _count_hit(self, breakpoint_id: int) -> int:
        with self._cond:
            count = self._hit_counts.get(breakpoint_id, 0) + 1
            self._hit_counts[breakpoint_id] = count
            return count

    def _classify(self, t: _VcpuThread, exit_: Exit, *, stepping: bool = False) -> Action:
        match exit_:
            case CanceledExit():
                return PARK if (self._stopping or self._ended or stepping) else KEEP
            case ExceptionExit(vector=Vector.DB, rip=rip) if exit_.is_icebp:
                entry = self.table.get(rip)
                if entry is not None and self.table.is_planted_at(rip):
                    return self._planted_hit(t, rip, entry.owners)
                # The guest's own INT1: deliver the trap it asked for.
                t.vcpu.set(Reg.RIP, rip + 1)
                t.vcpu.inject_exception(Vector.DB)
                return KEEP
            case ExceptionExit(vector=Vector.DB) if self._hw_hits(exit_.debug_status):
                ids = tuple(self._hw_slots[n][0].id for n in self._hw_hits(exit_.debug_status))
                return Stopped(StopReason.BREAKPOINT, t.index, exit_.rip, ids)
            case ExceptionExit(vector=Vector.DB) if exit_.debug_status & 0xF:
                # The guest's own DR0-3 breakpoint (not one of the engine's slots): its
                # #DB, with the DR6 bits the CPU would have set.
                dr6 = t.vcpu.get_int(Reg.DR6)
                t.vcpu.set(Reg.DR6, dr6 | (exit_.debug_status & 0xF))
                t.vcpu.inject_exception(Vector.DB)
                return KEEP
            case ExceptionExit(vector=Vector.DB) if exit_.is_single_step and not stepping:
                t.vcpu.inject_exception(Vector.DB)  # the guest's own TF: its #DB
                return KEEP
            case ExceptionExit(vector=vector, rip=rip, error_code=error_code):
                code = exit_.instruction_bytes
                # INT3 / INT n are traps: the guest's handler expects RIP after them.
                advance = 1 if vector == Vector.BP and code[:1] == b"\xcc" else \
                    2 if code[:1] == b"\xcd" and code[1:2] == bytes([vector]) else 0
                t.owed_exception = (vector, error_code, advance)
                return Stopped(StopReason.EXCEPTION, t.index, rip,
                               description=_describe_exception(exit_))
            case HaltExit():
                t.halted = True
                return PARK
            case ShutdownExit(rip=rip, reason=reason):
                return Stopped(StopReason.EXCEPTION, t.index, rip,
                               description=f"{reason} at {rip:#x}")
            case InternalErrorExit(rip=rip, message=message):
                return Stopped(StopReason.EXCEPTION, t.index, rip, description=message)
        raise AssertionError(f"unclassified exit {exit_!r}")

    def _hw_hits(self, debug_status: int) -> list[int]:
        """The engine's own slots among the DR6 B0-B3 bits of a #DB."""
        return [n for n, slot in enumerate(self._hw_slots)
                if slot is not None and debug_status >> n & 1]

    # -- the vCPU threads -------------------------------------------------------------------
    def _thread_main(self, t: _VcpuThread) -> None:
        while True:
            t.go.wait()
            t.go.clear()
            if self._closing:
                return
            self._run_until_stop(t)
            with self._cond:
                self._running -= 1
                if self._running == 0:
                    self._finish_stop_locked()
                self._cond.notify_all()

    def _run_until_stop(self, t: _VcpuThread) -> None:
        while not self._stopping:
            try:
                exit_ = t.vcpu.run()
            except Exception as error:  # a platform failure is a stop, never a hang
                exit_ = InternalErrorExit(0, f"platform error: {error!r}")
            action = self._classify(t, exit_)
            if action is KEEP:
                continue
            if isinstance(action, Stopped | _Internal):
                with self._cond:
                    if self._stop is None and not self._pausing and self._ended is None:
                        self._stop = action
                    else:
                        t.pending = action  # reported at a later resume
                    self._request_stop_locked()
            else:
                self._end_if_all_halted()
            return

    def _request_stop_locked(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for t in self._threads:
            t.vcpu.cancel()

    def _finish_stop_locked(self) -> None:
        """The last running vCPU parked: clean memory, then report."""
        if self.table.armed:
            self.table.disarm(self.memory)
        stop, self._stop = self._stop, None
        pausing, self._pausing = self._pausing, False
        self._stopping = False
        applied = self._run_stopped_calls()
        if self._ended is not None:
            if isinstance(stop, Stopped):
                self._emit(stop)  # it came first; the end is reported at the next resume
            else:
                self._report_end()
            return
        if stop is None and not pausing and applied:
            self._resume_locked(self._resume_only)  # stopped only to apply a change
            return
        if isinstance(stop, _Internal):
            self._on_internal_stop(stop)
            return
        if stop is None and pausing:
            t = self._threads[0]
            stop = Stopped(StopReason.PAUSE, t.index, self._rip(t), description="paused")
        elif stop is None:
            # Every vCPU that ran halted with interrupts off, but not all of them did
            # (a single-thread resume): still a stop the client must hear about.
            stop = self._halted_stop(next(t for t in self._threads if t.halted),
                                     StopReason.PAUSE)
        self._emit(stop)

    def _halted_stop(self, t: _VcpuThread, reason: StopReason) -> Stopped:
        return Stopped(reason, t.index, self._rip(t),
                       description="vCPU is halted with interrupts off")

    def _end_if_all_halted(self) -> bool:
        """HLT with interrupts off on every vCPU: nothing can wake them, the VM ends."""
        if not all(t.halted for t in self._threads):
            return False
        self.machine.end(RunResult("halted", 0, "every vCPU halted with interrupts off"))
        return True

    def _on_machine_end(self, result: RunResult) -> None:
        self._ended = result
        self._stopping = True

    def close(self) -> None:
        with self._cond:
            self._closing = True
            if self._running:
                self._request_stop_locked()
        for t in self._threads:
            t.go.set()
        try:
            for t in self._threads:
                assert t.thread is not None
                t.thread.join(5)
            self.machine.close()
        finally:
            if self._pin is not None:
                self._pin.release()
