"""initialize, launch, configurationDone, disconnect, terminate, restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dap_whpx.protocol.messages import (
    DisconnectArguments,
    InitializeArguments,
    LaunchArguments,
)
from dap_whpx.session import DapError, Session, capabilities, capability, request
from whpx_core.platform.base import PlatformError, PlatformUnavailable
from whpx_core.platform.choice import choose


@request("initialize", InitializeArguments)
def initialize(session: Session, args: InitializeArguments) -> dict[str, Any]:
    session.state["client"] = args
    return capabilities()


@capability(supportsConfigurationDoneRequest=True)
@request("launch", LaunchArguments)
def launch(session: Session, args: LaunchArguments) -> None:
    if session.engine is not None:
        raise DapError("a program is already running in this session")
    program = _resolve(args)
    client = session.state.get("client")
    progress = client is not None and client.supportsProgressReporting
    if progress:
        session.event("progressStart", {"progressId": "launch", "title": "Starting the VM",
                                        "message": f"loading {program.name}"})
    try:
        _start_vm(session, args, program, configure=True)
    finally:
        if progress:
            session.event("progressEnd", {"progressId": "launch"})
    return None


def _resolve(args: LaunchArguments) -> Path:
    program = Path(args.program)
    return program if program.is_absolute() else Path(args.cwd or ".") / program


def _start_vm(session: Session, args: LaunchArguments, program: Path,
              configure: bool) -> None:
    """Create the VM and its engine. `configure`: a new session, so the client is told
    to send its configuration (`initialized`); a restart keeps the configuration."""
    # Imported here: the engine pulls in numpy and Unicorn, which `initialize` (and so
    # the adapter's start-up, which a client waits for) does not need.
    from whpx_core.debug.launch import launch as launch_engine
    from whpx_core.machine.elf_loader import ElfError, load_elf
    from whpx_core.machine.vm import MachineError
    from whpx_core.symbols.elf_symbols import SymbolTable

    try:
        choice = choose(args.platform)
        image = load_elf(program)
        engine = launch_engine(choice.platform, image, cpus=args.cpus,
                               memory_mib=args.memory,
                               step_into_handlers=args.stepIntoHandlers)
    except ElfError as error:
        raise DapError(f"launch: 'program': {error}") from None
    except PlatformUnavailable as error:
        raise DapError(f"launch: 'platform': {error}") from None
    except MachineError as error:
        field = "cpus" if "cpus" in str(error) else "memory"
        raise DapError(f"launch: '{field}': {error}") from None
    except PlatformError as error:
        raise DapError(f"launch: {error}") from None
    session.engine = engine
    session.state.update(launch=args, image=image, symbols=SymbolTable(image.symbols),
                         platform=choice.platform, debug_info=_debug_info(program))
    session.start_event_pump()

    def announce() -> None:
        if choice.note:
            session.output(f"dap-whpx: {choice.note}\n")
        session.output(f"dap-whpx: {choice.platform.describe()}; {args.cpus} vCPU(s), "
                       f"{args.memory} MiB; {program}\n")
        for vcpu in range(args.cpus):
            session.event("thread", {"reason": "started", "threadId": vcpu + 1})
        if configure:
            session.event("initialized")

    session.after_response(announce)


def _debug_info(program: Path):
    """The program's DWARF (opened lazily: a large image costs little here); None when
    it cannot be read, which leaves the session at instruction level."""
    from whpx_core.symbols.debug_info import DebugInfo, DebugInfoError

    try:
        return DebugInfo.open(program)
    except (DebugInfoError, OSError):
        return None


@request("configurationDone")
def configuration_done(session: Session, args: Any) -> None:
    engine = session.engine
    if engine is None:
        raise DapError("configurationDone before launch")
    if session.state["launch"].stopOnEntry:
        session.after_response(lambda: session.event("stopped", {
            "reason": "entry", "threadId": 1, "allThreadsStopped": True}))
    else:
        session.after_response(engine.resume)
    return None


def _end_engine(session: Session) -> None:
    if session.engine is not None:
        session.stop_event_pump()
        session.engine.close()
        session.engine = None


@capability(supportTerminateDebuggee=True)
@request("disconnect", DisconnectArguments)
def disconnect(session: Session, args: DisconnectArguments) -> None:
    _end_engine(session)
    session.ended = True
    return None


@capability(supportsTerminateRequest=True)
@request("terminate")
def terminate(session: Session, args: Any) -> None:
    engine = session.engine
    if engine is None:
        return None
    exit_code = engine.ended.exit_code if engine.ended else 0
    _end_engine(session)

    def announce() -> None:
        session.event("exited", {"exitCode": exit_code})
        session.event("terminated")

    session.after_response(announce)
    return None


@capability(supportsRestartRequest=True)
@request("restart")
def restart(session: Session, args: Any) -> None:
    launch_args = session.state.get("launch")
    if launch_args is None:
        raise DapError("restart before launch")
    if isinstance(args, dict) and isinstance(args.get("arguments"), dict):
        launch_args = LaunchArguments.model_validate(args["arguments"])
    breakpoints = session.state.get("breakpoint_requests", {})
    exception_filters = session.state.get("exception_filters")
    _end_engine(session)
    session.handles.clear()
    _start_vm(session, launch_args, _resolve(launch_args), configure=False)
    from dap_whpx.handlers.breakpoints import replay

    replay(session, breakpoints)  # the same breakpoints, on the new VM
    if exception_filters is not None:
        session.engine.set_exception_stops(exception_filters)
    engine = session.engine

    def go() -> None:
        if launch_args.stopOnEntry:
            session.event("stopped", {"reason": "entry", "threadId": 1,
                                      "allThreadsStopped": True})
        else:
            engine.resume()

    session.after_response(go)
    return None
