"""Hand-written pydantic models of the DAP messages this adapter reads and writes.

Generated models have real defects (platform-facts §6); these follow the official schema
(`shared/dap/debugAdapterProtocol.json`), and a test validates every message the adapter
emits against it. Arguments from clients allow extra fields (VS Code adds its own) but
are strict about the types of the fields we use, so a wrong type gets an error response
that names the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Arguments(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, by_alias=True)


# -- incoming ------------------------------------------------------------------------


class Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    seq: int
    type: Literal["request"]
    command: str
    arguments: dict[str, Any] | None = None


class InitializeArguments(Arguments):
    adapterID: str | None = None
    clientID: str | None = None
    linesStartAt1: bool = True
    columnsStartAt1: bool = True
    supportsMemoryReferences: bool = False
    supportsVariableType: bool = False
    supportsProgressReporting: bool = False


class LaunchArguments(Arguments):
    """The launch configuration: these names are a public interface (launch.json)."""

    program: str
    cpus: int = Field(default=1, ge=1, le=64)
    memory: int = Field(default=64, ge=1, le=3072)
    platform: Literal["auto", "emulated", "kvm", "whp"] = "auto"
    stopOnEntry: bool = False
    cwd: str | None = None
    stepIntoHandlers: bool = False
    noDebug: bool = False


class Source(Body):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    path: str | None = None
    sourceReference: int | None = None


class SourceBreakpoint(Arguments):
    line: int
    column: int | None = None
    condition: str | None = None
    hitCondition: str | None = None
    logMessage: str | None = None
    mode: str | None = None


class SetBreakpointsArguments(Arguments):
    source: Source
    breakpoints: list[SourceBreakpoint] = []
    lines: list[int] | None = None


class BreakpointLocationsArguments(Arguments):
    source: Source
    line: int
    column: int | None = None
    endLine: int | None = None
    endColumn: int | None = None


class FunctionBreakpoint(Arguments):
    name: str
    condition: str | None = None
    hitCondition: str | None = None


class SetFunctionBreakpointsArguments(Arguments):
    breakpoints: list[FunctionBreakpoint]


class InstructionBreakpoint(Arguments):
    instructionReference: str
    offset: int = 0
    condition: str | None = None
    hitCondition: str | None = None
    mode: str | None = None


class SetInstructionBreakpointsArguments(Arguments):
    breakpoints: list[InstructionBreakpoint]


class DataBreakpointInfoArguments(Arguments):
    name: str
    variablesReference: int | None = None
    frameId: int | None = None
    bytes: int | None = None
    asAddress: bool | None = None
    mode: str | None = None


class DataBreakpoint(Arguments):
    dataId: str
    accessType: Literal["read", "write", "readWrite"] | None = None
    condition: str | None = None
    hitCondition: str | None = None


class SetDataBreakpointsArguments(Arguments):
    breakpoints: list[DataBreakpoint]


class SetExceptionBreakpointsArguments(Arguments):
    filters: list[str]


class ThreadArguments(Arguments):
    threadId: int
    singleThread: bool = False
    granularity: Literal["statement", "line", "instruction"] | None = None


class PauseArguments(Arguments):
    threadId: int


class StackTraceArguments(Arguments):
    threadId: int
    startFrame: int = 0
    levels: int = 0


class ScopesArguments(Arguments):
    frameId: int


class VariablesArguments(Arguments):
    variablesReference: int
    start: int = 0
    count: int = 0


class SetVariableArguments(Arguments):
    variablesReference: int
    name: str
    value: str


class ReadMemoryArguments(Arguments):
    memoryReference: str
    offset: int = 0
    count: int = Field(ge=0)


class WriteMemoryArguments(Arguments):
    memoryReference: str
    offset: int = 0
    data: str
    allowPartial: bool = False


class DisassembleArguments(Arguments):
    memoryReference: str
    offset: int = 0
    instructionOffset: int = 0
    instructionCount: int = Field(ge=0)
    resolveSymbols: bool = True


class EvaluateArguments(Arguments):
    expression: str
    frameId: int | None = None
    context: str | None = None


class DisconnectArguments(Arguments):
    restart: bool = False
    terminateDebuggee: bool | None = None
    suspendDebuggee: bool = False


# -- outgoing ------------------------------------------------------------------------


class ExceptionBreakpointsFilter(Body):
    filter: str
    label: str
    description: str | None = None
    default: bool = False


class BreakpointMode(Body):
    mode: str
    label: str
    description: str | None = None
    appliesTo: list[Literal["source", "exception", "data", "instruction"]]


class Breakpoint(Body):
    id: int | None = None
    verified: bool
    message: str | None = None
    source: Source | None = None
    line: int | None = None
    instructionReference: str | None = None
    offset: int | None = None
    reason: Literal["pending", "failed"] | None = None


class Thread(Body):
    id: int
    name: str


class StackFrame(Body):
    id: int
    name: str
    source: Source | None = None
    line: int
    column: int
    instructionPointerReference: str | None = None
    presentationHint: Literal["normal", "label", "subtle"] | None = None


class Scope(Body):
    name: str
    presentationHint: str | None = None
    variablesReference: int
    namedVariables: int | None = None
    expensive: bool = False


class Variable(Body):
    name: str
    value: str
    type: str | None = None
    variablesReference: int = 0
    memoryReference: str | None = None
    evaluateName: str | None = None


class DisassembledInstruction(Body):
    address: str
    instructionBytes: str | None = None
    instruction: str
    symbol: str | None = None
    location: Source | None = None
    line: int | None = None
    presentationHint: Literal["normal", "invalid"] | None = None


class Capabilities(Body):
    model_config = ConfigDict(extra="allow")
