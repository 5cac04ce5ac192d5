"""The adapter as a client sees it: a subprocess speaking DAP over real pipes (and once
over TCP), real guests, every platform present. Every message the adapter sends is
checked against the DAP schema by the client."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time

import pytest

from tests.dap.client import DapClient
from whpx_core.machine.elf_loader import load_elf

TIMEOUT = 60


@pytest.fixture
def clients():
    made: list[DapClient] = []
    yield made
    for client in made:
        client.close()
    for client in made:
        assert client.problems == [], client.problems[:3]


def spawn(clients) -> DapClient:
    client = DapClient.spawn()
    clients.append(client)
    return client


def stopped_rip(client: DapClient, thread_id: int) -> int:
    frames = client.request("stackTrace", {"threadId": thread_id})["body"]["stackFrames"]
    return int(frames[0]["instructionPointerReference"], 16)


def patch(client: DapClient, image, symbol: str, value: int) -> None:
    client.request("writeMemory", {"memoryReference": hex(image.symbols[symbol]),
                                   "data": base64.b64encode(value.to_bytes(8, "little"))
                                   .decode()})


def test_stop_on_entry_then_continue_to_exit(clients, platform, guests):
    client = spawn(clients)
    capabilities = client.start(guests["hello"], stopOnEntry=True, platform=platform.name)
    assert capabilities["supportsConfigurationDoneRequest"]
    client.request("configurationDone")
    stopped = client.wait_event("stopped")["body"]
    assert stopped["reason"] == "entry" and stopped["allThreadsStopped"]
    assert stopped_rip(client, 1) == load_elf(guests["hello"]).entry
    client.request("continue", {"threadId": 1})
    assert client.wait_event("exited", TIMEOUT)["body"]["exitCode"] == 42
    client.wait_event("terminated")
    assert client.output() == "Hello from dap-whpx guest!\n"
    # The guest writes the UART a byte at a time; the adapter sends runs of output
    # together instead of one event per byte (27 here).
    assert len([e for e in client.events_named("output")
                if e["body"]["category"] == "stdout"]) <= 3


def test_function_and_instruction_breakpoints_hit_on_each_vcpu_thread(
        clients, platform, guests):
    image = load_elf(guests["smp"])
    client = spawn(clients)
    client.start(guests["smp"], cpus=2, stopOnEntry=True, platform=platform.name)
    patch(client, image, "smp_iterations", 50)
    threads = client.request("threads")["body"]["threads"]
    assert [t["name"] for t in threads] == ["CPU 0", "CPU 1"]
    result = client.request("setFunctionBreakpoints",
                            {"breakpoints": [{"name": "smp_hit"}]})["body"]["breakpoints"]
    assert result[0]["verified"]
    client.request("configurationDone")
    client.wait_event("stopped")
    seen = set()
    for _ in range(20):
        client.request("continue", {"threadId": 1})
        body = client.wait_event("stopped", TIMEOUT)["body"]
        assert body["reason"] == "function breakpoint"
        assert body["hitBreakpointIds"] == [result[0]["id"]]
        assert stopped_rip(client, body["threadId"]) == image.symbols["smp_hit"]
        seen.add(body["threadId"])
    assert seen == {1, 2}
    client.request("setFunctionBreakpoints", {"breakpoints": []})
    address = image.symbols["smp_hit"] + 1  # the instruction after push %rbp
    bp = client.request("setInstructionBreakpoints", {"breakpoints": [
        {"instructionReference": hex(address)}]})["body"]["breakpoints"][0]
    assert bp["verified"]
    client.request("continue", {"threadId": 1})
    body = client.wait_event("stopped", TIMEOUT)["body"]
    assert body["reason"] == "instruction breakpoint"
    assert stopped_rip(client, body["threadId"]) == address


def test_instruction_steps_and_register_writes(clients, platform, guests):
    image = load_elf(guests["spin"])
    client = spawn(clients)
    client.start(guests["spin"], stopOnEntry=True, platform=platform.name)
    patch(client, image, "spin_iterations", 1000)
    client.request("setFunctionBreakpoints", {"breakpoints": [{"name": "spin_loop"}]})
    client.request("configurationDone")
    client.wait_event("stopped")
    client.request("continue", {"threadId": 1})
    client.wait_event("stopped", TIMEOUT)
    loop = image.symbols["spin_loop"]
    rips = []
    for _ in range(3):
        client.request("next", {"threadId": 1, "granularity": "instruction"})
        assert client.wait_event("stopped")["body"]["reason"] == "step"
        rips.append(stopped_rip(client, 1))
    assert rips == [loop + 3, loop, loop + 3]
    scopes = client.request("scopes", {"frameId": 1})["body"]["scopes"]
    registers = next(s for s in scopes if s["name"] == "Registers")["variablesReference"]
    client.request("setVariable", {"variablesReference": registers, "name": "RCX",
                                   "value": "1"})
    values = {v["name"]: v for v in client.request(
        "variables", {"variablesReference": registers})["body"]["variables"]}
    assert int(values["RCX"]["value"], 16) == 1
    flags = client.request("variables", {
        "variablesReference": values["RFLAGS"]["variablesReference"]})["body"]["variables"]
    assert {f["name"] for f in flags} >= {"CF", "ZF", "IF", "TF"}
    evaluated = client.request("evaluate", {"expression": "rcx + 41", "frameId": 1})
    assert evaluated["body"]["result"].endswith("(42)")
    # RCX is 1 at "jnz": the loop ends after one more dec.
    client.request("setFunctionBreakpoints", {"breakpoints": []})
    client.request("continue", {"threadId": 1})
    assert client.wait_event("exited", TIMEOUT)["body"]["exitCode"] == 0


def test_memory_write_read_round_trip_virtual_and_physical(clients, platform, guests):
    client = spawn(clients)
    client.start(guests["hello"], stopOnEntry=True, platform=platform.name)
    client.request("configurationDone")
    client.wait_event("stopped")
    data = bytes(range(256)) * 20  # crosses a page boundary
    client.request("writeMemory", {"memoryReference": "0x200f00",
                                   "data": base64.b64encode(data).decode()})
    virtual = client.request("readMemory", {"memoryReference": "0x200f00",
                                            "count": len(data)})["body"]
    physical = client.request("readMemory", {"memoryReference": "phys:0x200f00",
                                             "count": len(data)})["body"]
    assert base64.b64decode(virtual["data"]) == data == base64.b64decode(physical["data"])
    unmapped = client.request("readMemory", {"memoryReference": "0x40000000",
                                             "count": 16})["body"]
    assert unmapped["unreadableBytes"] == 16


def test_disassemble_around_rip(clients, platform, guests):
    image = load_elf(guests["hello"])
    client = spawn(clients)
    client.start(guests["hello"], stopOnEntry=True, platform=platform.name)
    client.request("setFunctionBreakpoints", {"breakpoints": [{"name": "say_hello"}]})
    client.request("configurationDone")
    client.wait_event("stopped")
    client.request("continue", {"threadId": 1})
    client.wait_event("stopped", TIMEOUT)
    rip = stopped_rip(client, 1)
    rows = client.request("disassemble", {"memoryReference": hex(rip),
                                          "instructionOffset": -3,
                                          "instructionCount": 8})["body"]["instructions"]
    assert len(rows) == 8
    assert int(rows[3]["address"], 16) == rip == image.symbols["say_hello"]
    assert rows[3]["instruction"] == "push rbp" and rows[3]["symbol"] == "say_hello"
    assert int(rows[2]["address"], 16) < rip  # decoded backwards onto real boundaries


def running_spin(clients, platform, guests):
    """The spin guest on 2 vCPUs, running (for ever, in effect)."""
    image = load_elf(guests["spin"])
    client = spawn(clients)
    client.start(guests["spin"], cpus=2, stopOnEntry=True, platform=platform.name)
    patch(client, image, "spin_iterations", 1 << 62)
    client.request("configurationDone")
    client.wait_event("stopped")
    client.request("continue", {"threadId": 1})
    time.sleep(0.3)
    return client, image


def test_pause_a_running_two_vcpu_guest(clients, platform, guests):
    client, image = running_spin(clients, platform, guests)
    client.request("pause", {"threadId": 1})
    body = client.wait_event("stopped", TIMEOUT)["body"]
    assert body["reason"] == "pause" and body["allThreadsStopped"]
    for thread in (1, 2):
        assert image.symbols["spin_loop"] <= stopped_rip(client, thread) <= \
            image.symbols["spin_done"]


def test_breakpoint_set_while_running_takes_effect_without_a_stop(clients, platform, guests):
    client, image = running_spin(clients, platform, guests)
    (bp,) = client.request("setFunctionBreakpoints", {
        "breakpoints": [{"name": "spin_loop"}]})["body"]["breakpoints"]
    assert bp["verified"]
    body = client.wait_event("stopped", TIMEOUT)["body"]
    assert body["reason"] == "function breakpoint" and body["hitBreakpointIds"] == [bp["id"]]
    assert len(client.events_named("stopped")) == 2  # entry, then the breakpoint only
    assert stopped_rip(client, body["threadId"]) == image.symbols["spin_loop"]


def test_disconnect_mid_run_ends_the_adapter_process(clients, platform, guests):
    image = load_elf(guests["spin"])
    client = spawn(clients)
    client.start(guests["spin"], cpus=2, stopOnEntry=True, platform=platform.name)
    patch(client, image, "spin_iterations", 1 << 62)
    client.request("configurationDone")
    client.request("continue", {"threadId": 1})
    time.sleep(0.2)
    client.request("disconnect", {"terminateDebuggee": True})
    assert client.process.wait(timeout=20) == 0  # no thread kept the process alive


def test_bad_launch_configuration_names_the_field(clients, guests, tmp_path):
    client = spawn(clients)
    client.request("initialize", {"adapterID": "whpx"})
    cases = [
        ({}, "'program'"),
        ({"program": str(guests["hello"]), "cpus": "two"}, "'cpus'"),
        ({"program": str(guests["hello"]), "cpus": 0}, "'cpus'"),
        ({"program": str(guests["hello"]), "platform": "vmware"}, "'platform'"),
        ({"program": str(tmp_path / "missing.elf")}, "'program'"),
        ({"program": str(guests["hello"]), "memory": 1}, "'memory'"),
    ]
    for arguments, field in cases:
        response = client.request("launch", arguments, ok=False)
        assert not response["success"] and field in response["message"], response
    client.request("launch", {"program": str(guests["hello"]), "platform": "emulated"})


def test_over_tcp_on_loopback(guests):
    server = subprocess.Popen([sys.executable, "-m", "dap_whpx", "--port", "0"],
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        match = re.search(r"listening on (127\.0\.0\.1):(\d+)", line)
        assert match, line
        client = DapClient.connect(int(match.group(2)))
        client.start(guests["hello"], platform="emulated")
        client.request("configurationDone")
        assert client.wait_event("exited", TIMEOUT)["body"]["exitCode"] == 42
        client.request("disconnect", {})
        client.close()
        assert client.problems == []
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_hardware_instruction_breakpoint_and_data_breakpoint(clients, platform, guests):
    image = load_elf(guests["smp"])
    client = spawn(clients)
    capabilities = client.start(guests["smp"], stopOnEntry=True, platform=platform.name)
    assert {m["mode"] for m in capabilities["breakpointModes"]} == {"software", "hardware"}
    patch(client, image, "smp_iterations", 3)
    client.request("setFunctionBreakpoints", {"breakpoints": [{"name": "guest_main"}]})
    client.request("configurationDone")
    client.wait_event("stopped")
    client.request("continue", {"threadId": 1})
    client.wait_event("stopped", TIMEOUT)  # at guest_main: .bss is clear
    client.request("setFunctionBreakpoints", {"breakpoints": []})
    info = client.request("dataBreakpointInfo", {
        "name": hex(image.symbols["smp_shared"]), "asAddress": True, "bytes": 8})["body"]
    if not platform.capabilities().hardware_watchpoints:
        assert info["dataId"] is None and "do not fire" in info["description"]
    else:
        bp = client.request("setDataBreakpoints", {"breakpoints": [
            {"dataId": info["dataId"], "accessType": "write"}]})["body"]["breakpoints"][0]
        assert bp["verified"]
        client.request("continue", {"threadId": 1})
        body = client.wait_event("stopped", TIMEOUT)["body"]
        assert body["reason"] == "data breakpoint" and body["hitBreakpointIds"] == [bp["id"]]
        written = client.request("readMemory", {
            "memoryReference": hex(image.symbols["smp_shared"]), "count": 8})["body"]
        assert int.from_bytes(base64.b64decode(written["data"]), "little") == 1
        client.request("setDataBreakpoints", {"breakpoints": []})
    hw = client.request("setInstructionBreakpoints", {"breakpoints": [
        {"instructionReference": hex(image.symbols["smp_hit"]), "mode": "hardware"}]})
    bp = hw["body"]["breakpoints"][0]
    assert bp["verified"], bp
    client.request("continue", {"threadId": 1})
    body = client.wait_event("stopped", TIMEOUT)["body"]
    assert body["reason"] == "instruction breakpoint" and body["hitBreakpointIds"] == [bp["id"]]
    assert stopped_rip(client, body["threadId"]) == image.symbols["smp_hit"]
    too_many = client.request("setInstructionBreakpoints", {"breakpoints": [
        {"instructionReference": hex(image.symbols["smp_hit"] + n), "mode": "hardware"}
        for n in range(5)]})["body"]["breakpoints"]
    assert [b["verified"] for b in too_many] == [True] * 4 + [False]
    assert "slots" in too_many[4]["message"]


def test_restart_runs_the_guest_again_with_the_same_breakpoints(clients, guests):
    client = spawn(clients)
    client.request("initialize", {"adapterID": "whpx", "supportsProgressReporting": True})
    client.request("launch", {"program": str(guests["hello"]), "platform": "emulated"})
    assert client.wait_event("progressEnd")["body"]["progressId"] == "launch"
    client.wait_event("initialized")
    client.request("setFunctionBreakpoints", {"breakpoints": [{"name": "say_hello"}]})
    client.request("configurationDone")
    assert client.wait_event("stopped", TIMEOUT)["body"]["reason"] == "function breakpoint"
    client.request("restart", {})
    body = client.wait_event("stopped", TIMEOUT)["body"]  # the new VM hits it again
    assert body["reason"] == "function breakpoint"
    client.request("setFunctionBreakpoints", {"breakpoints": []})
    client.request("continue", {"threadId": 1})
    assert client.wait_event("exited", TIMEOUT)["body"]["exitCode"] == 42
    assert client.output().count("Hello from dap-whpx guest!") == 1


def test_exception_breakpoint_single_thread_continue_and_terminate(clients, platform, guests):
    """Stop on the guest's #UD before its handler runs; the guest still gets it. Then a
    single-thread continue, and terminate."""
    image = load_elf(guests["faults"])
    client = spawn(clients)
    capabilities = client.start(guests["faults"], cpus=2, stopOnEntry=True,
                                platform=platform.name)
    assert {f["filter"] for f in capabilities["exceptionBreakpointFilters"]} >= {"UD", "PF"}
    result = client.request("setExceptionBreakpoints", {"filters": ["UD", "PF"]})
    verified = [b["verified"] for b in result["body"]["breakpoints"]]
    interceptable = platform.capabilities().interceptable_vectors
    assert verified == [6 in interceptable, 14 in interceptable]
    client.request("configurationDone")
    client.wait_event("stopped")
    if 6 in interceptable:
        client.request("continue", {"threadId": 1})
        assert client.wait_event("continued")["body"]["allThreadsContinued"]
        body = client.wait_event("stopped", TIMEOUT)["body"]
        assert body["reason"] == "exception" and "#UD" in body["description"]
        assert stopped_rip(client, body["threadId"]) == image.symbols["fault_ud_rip"]
        client.request("setExceptionBreakpoints", {"filters": []})
    client.request("continue", {"threadId": 1, "singleThread": True})
    event = client.wait_event("continued")["body"]
    assert event["allThreadsContinued"] is False
    assert client.wait_event("exited", TIMEOUT)["body"]["exitCode"] == 0  # handled it
    assert "ok UD" in client.output()


def test_terminate_ends_a_running_guest(clients, guests):
    image = load_elf(guests["spin"])
    client = spawn(clients)
    client.start(guests["spin"], stopOnEntry=True, platform="emulated")
    patch(client, image, "spin_iterations", 1 << 62)
    client.request("configurationDone")
    client.request("continue", {"threadId": 1})
    client.request("terminate")
    client.wait_event("exited")
    client.wait_event("terminated")
    client.request("disconnect", {})
    assert client.process.wait(timeout=20) == 0
