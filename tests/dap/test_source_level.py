"""Source-level debugging through the adapter over real pipes: the srcdemo guest in C,
built at -O0 and -O2 with DWARF 4 and 5, run on every platform present. Every message
the adapter sends is checked against the DAP schema by the client."""

from __future__ import annotations

import pytest

from tests.dap.client import DapClient
from tests.guests import build
from tests.symbols.markers import marker_line

TIMEOUT = 120
SOURCE = str(build.GUEST_DIR / "srcdemo.c")
BUILDS = [("-O0", 5), ("-O0", 4), ("-O2", 5), ("-O2", 4)]


def line(name: str) -> int:
    return marker_line("srcdemo.c", name)


@pytest.fixture(scope="module")
def srcdemo_builds(tmp_path_factory):
    out = tmp_path_factory.mktemp("srcdemo-dap")
    return {f"{opt}-dwarf{dwarf}": build.build_guest("srcdemo", out, opt=opt, dwarf=dwarf)
            for opt, dwarf in BUILDS}


@pytest.fixture(params=[f"{o}-dwarf{d}" for o, d in BUILDS])
def variant(request, platform):
    if platform.name != "emulated" and request.param != "-O0-dwarf5":
        pytest.skip("the full build matrix runs on the emulated platform; "
                    f"{platform.name} runs -O0-dwarf5")
    return request.param


@pytest.fixture
def client(platform, variant, srcdemo_builds):
    made = DapClient.spawn()
    made.start(srcdemo_builds[variant], stopOnEntry=True, platform=platform.name, cpus=2)
    made.optimized = variant.startswith("-O2")
    yield made
    made.close()
    assert made.problems == [], made.problems[:3]


def set_lines(client: DapClient, *breakpoints: dict) -> list[dict]:
    body = client.request("setBreakpoints", {"source": {"path": SOURCE},
                                             "breakpoints": list(breakpoints)})["body"]
    return body["breakpoints"]


def go(client: DapClient) -> dict:
    client.request("continue", {"threadId": 1})
    return client.wait_event("stopped", TIMEOUT)["body"]


def run_to(client: DapClient, *breakpoints: dict) -> dict:
    """Set these source breakpoints, end the configuration (the entry stop), continue to
    the first hit."""
    set_lines(client, *breakpoints)
    client.request("configurationDone")
    client.wait_event("stopped")
    return go(client)


def stack(client: DapClient, thread: int = 1) -> list[dict]:
    return client.request("stackTrace", {"threadId": thread})["body"]["stackFrames"]


def variables_of(client: DapClient, frame_id: int, scope: str) -> dict[str, dict]:
    scopes = client.request("scopes", {"frameId": frame_id})["body"]["scopes"]
    ref = next(s for s in scopes if s["name"] == scope)["variablesReference"]
    found = client.request("variables", {"variablesReference": ref})["body"]["variables"]
    return {v["name"]: v for v in found}


def children(client: DapClient, variable: dict) -> dict[str, dict]:
    assert variable["variablesReference"], variable
    found = client.request("variables", {"variablesReference": variable["variablesReference"]})
    return {v["name"]: v for v in found["body"]["variables"]}


def finish(client: DapClient) -> None:
    client.request("setBreakpoints", {"source": {"path": SOURCE}, "breakpoints": []})
    client.request("continue", {"threadId": 1})
    assert client.wait_event("exited", TIMEOUT)["body"]["exitCode"] == 0


def test_leaf_breakpoint_hits_three_times_with_each_callers_stack(client):
    (bp,) = set_lines(client, {"line": line("leaf_body")})
    assert bp["verified"] and bp["line"] == line("leaf_body")
    client.request("configurationDone")
    client.wait_event("stopped")
    for caller in ("caller_a", "caller_b", "caller_c"):
        stopped = go(client)
        assert stopped["reason"] == "breakpoint" and stopped["hitBreakpointIds"] == [bp["id"]]
        frames = stack(client)
        assert [f["name"] for f in frames[:3]] == ["leaf", caller, "guest_main"]
        assert frames[0]["line"] == line("leaf_body")
        assert frames[1]["line"] == line(f"{caller}_call")
        assert frames[2]["line"] == line("main_callers")
        assert frames[0]["source"]["path"] == SOURCE
    finish(client)


def test_conditional_breakpoint_hits_once_with_i_37(client):
    (bp,) = set_lines(client, {"line": line("loop_body"), "condition": "i == 37"})
    assert bp["verified"]
    client.request("configurationDone")
    client.wait_event("stopped")
    assert go(client)["reason"] == "breakpoint"
    frame = stack(client)[0]
    assert frame["name"] == "loop100"
    # -O2 computes `total` at the end: line loop_body shares its address with the next
    # line's statement, which is the line shown there (as gdb shows it)
    assert frame["line"] == line("loop_body") or (
        client.optimized and frame["line"] == line("loop_body") + 1)
    local = variables_of(client, frame["id"], "Locals")
    assert local["i"]["value"] == "37"
    evaluated = client.request("evaluate", {"expression": "i * 2", "frameId": frame["id"],
                                            "context": "watch"})["body"]
    assert evaluated["result"].endswith("(74)") or evaluated["result"] == "74"
    finish(client)  # no second stop: exited follows


def test_logpoint_prints_100_lines_without_a_stop(client):
    (bp,) = set_lines(client, {"line": line("loop_body"), "logMessage": "i={i}"})
    assert bp["verified"]
    client.request("configurationDone")
    client.wait_event("stopped")
    client.request("continue", {"threadId": 1})
    assert client.wait_event("exited", TIMEOUT)["body"]["exitCode"] == 0
    logged = [e["body"]["output"] for e in client.events_named("output")
              if e["body"].get("category") == "console" and e["body"]["output"].startswith("i=")]
    assert logged == [f"i={n}\n" for n in range(100)]
    assert client.events_named("stopped")[1:] == []  # only the entry stop


def test_next_step_in_step_out(client):
    run_to(client, {"line": line("step_call")})
    client.request("next", {"threadId": 1})
    assert client.wait_event("stopped", TIMEOUT)["body"]["reason"] == "step"
    frame = stack(client)[0]
    assert frame["name"] == "step_demo" and frame["line"] == line("step_after")
    finish(client)


def test_step_in_then_out_returns_to_the_callers_line(client):
    run_to(client, {"line": line("step_call")})
    client.request("stepIn", {"threadId": 1})
    client.wait_event("stopped", TIMEOUT)
    frames = stack(client)
    assert frames[0]["name"] == "step_callee" and frames[0]["line"] == line("callee_body")
    assert frames[1]["name"] == "step_demo"
    client.request("stepOut", {"threadId": 1})
    client.wait_event("stopped", TIMEOUT)
    frame = stack(client)[0]
    assert frame["name"] == "step_demo"
    assert frame["line"] in (line("step_call"), line("step_after"))
    finish(client)


def test_next_over_a_recursive_call(client):
    run_to(client, {"line": line("fact_recurse"), "condition": "n == 5"})
    depth = len(stack(client))
    client.request("next", {"threadId": 1})
    client.wait_event("stopped", TIMEOUT)
    frames = stack(client)
    assert frames[0]["name"] == "factorial" and frames[0]["line"] == line("fact_after")
    assert len(frames) == depth
    arguments = variables_of(client, frames[0]["id"], "Arguments")
    assert arguments["n"]["value"] in ("5", "<optimized out>")
    if not client.optimized:
        assert arguments["n"]["value"] == "5"
    finish(client)


def test_locals_struct_members_and_array_elements(client):
    run_to(client, {"line": line("inspect_body")})
    frame = stack(client)[0]
    assert frame["name"] == "inspect"
    local = variables_of(client, frame["id"], "Locals")
    arguments = variables_of(client, frame["id"], "Arguments")
    optimized = "<optimized out>"
    arr = children(client, local["arr"]) if local["arr"]["value"] != optimized else None
    if arr is not None:
        assert [arr[f"[{n}]"]["value"] for n in range(5)] == ["10", "20", "30", "40", "50"]
    if local["pt"]["value"] != optimized:
        pt = children(client, local["pt"])
        assert (pt["x"]["value"], pt["y"]["value"]) == ("3", "-4")
        assert pt["tag"]["value"].endswith("'q'")
    if arguments["count"]["value"] != optimized:
        assert arguments["count"]["value"] == "2"
    if arguments["p"]["value"] != optimized:
        node = children(client, arguments["p"])
        pointee = next(iter(node.values()))
        assert children(client, pointee)["value"]["value"] == "7"
    if not client.optimized:
        assert arr is not None and local["pt"]["value"] != optimized
        assert arguments["p"]["value"] != optimized
    evaluated = client.request("evaluate", {"expression": "p->next->value",
                                            "frameId": frame["id"]})["body"]
    assert evaluated["result"] in ("11", "0xb (11)") or evaluated["result"].endswith("(11)")
    # setVariable on a local, read back
    if not client.optimized:
        scopes = client.request("scopes", {"frameId": frame["id"]})["body"]["scopes"]
        ref = next(s for s in scopes if s["name"] == "Arguments")["variablesReference"]
        set_to = client.request("setVariable", {"variablesReference": ref, "name": "count",
                                                "value": "3"})["body"]
        assert set_to["value"] == "3"
        assert variables_of(client, frame["id"], "Arguments")["count"]["value"] == "3"
    finish(client)


def test_five_deep_stack_through_the_assembly_frame(client):
    run_to(client, {"line": line("chain_4_body")})
    frames = stack(client)
    names = [f["name"] for f in frames[:6]]
    assert names == ["chain_4", "chain_3", "demo_asm_frame", "chain_2", "chain_1",
                     "guest_main"]
    assert frames[0]["line"] == line("chain_4_body")
    assert frames[1]["line"] == line("chain_3_call")
    assert frames[3]["line"] == line("chain_2_call")
    assert frames[4]["line"] == line("chain_1_call")
    assert frames[5]["line"] == line("main_chain")
    finish(client)


def test_breakpoint_locations_and_a_line_without_code_moves(client):
    first = line("leaf_body") - 2  # the function's opening line or a blank: moved forward
    locations = client.request("breakpointLocations", {
        "source": {"path": SOURCE}, "line": line("loop_body") - 3,
        "endLine": line("loop_done")})["body"]["breakpoints"]
    assert {"line": line("loop_body")} in locations
    (bp,) = set_lines(client, {"line": first})
    assert bp["verified"] and bp["line"] >= first
    (missing,) = set_lines(client, {"line": 100000})
    assert not missing["verified"] and missing["message"]
    client.request("configurationDone")
    client.wait_event("stopped")
    finish(client)


def test_disassembly_carries_line_information(client):
    client.request("configurationDone")
    client.wait_event("stopped")
    set_lines(client, {"line": line("step_call")})
    go(client)
    pc = stack(client)[0]["instructionPointerReference"]
    rows = client.request("disassemble", {"memoryReference": pc, "instructionCount": 8})
    with_lines = [r for r in rows["body"]["instructions"] if r.get("line")]
    assert with_lines and with_lines[0]["location"]["path"] == SOURCE
    assert with_lines[0]["line"] == line("step_call")
    finish(client)


def test_data_breakpoint_on_a_c_variable_takes_its_address_and_size(client, platform):
    if not platform.capabilities().hardware_watchpoints:
        pytest.skip(f"{platform.name}: data watchpoints do not fire here (measured)")
    run_to(client, {"line": line("step_call")})
    frame = stack(client)[0]
    scopes = client.request("scopes", {"frameId": frame["id"]})["body"]["scopes"]
    globals_ref = next(s for s in scopes if s["name"] == "Globals")["variablesReference"]
    info = client.request("dataBreakpointInfo", {"name": "demo_sink",
                                                 "variablesReference": globals_ref})["body"]
    watch = client.request("dataBreakpointInfo", {"name": "demo_sink",
                                                  "frameId": frame["id"]})["body"]
    address = client.request("evaluate", {"expression": "&demo_sink",
                                          "frameId": frame["id"]})["body"]["memoryReference"]
    assert info["dataId"] == watch["dataId"] == f"{int(address, 16):#x}/4"  # an int: 4 bytes
    set_lines(client)  # no line breakpoints: the watchpoint is what stops next
    (bp,) = client.request("setDataBreakpoints", {"breakpoints": [
        {"dataId": info["dataId"], "accessType": "write"}]})["body"]["breakpoints"]
    assert bp["verified"]
    stopped = go(client)
    assert stopped["reason"] == "data breakpoint"
    assert stack(client)[0]["name"] == "step_callee"  # the next write: demo_sink = r
    client.request("setDataBreakpoints", {"breakpoints": []})
    finish(client)
