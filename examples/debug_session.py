"""A real debug session, scripted: the adapter as a subprocess over DAP pipes, on the
default platform this machine offers, doing what a user does in VS Code.

    .venv/bin/python examples/debug_session.py

1. Source level, the srcdemo guest (C, DWARF) on 2 vCPUs: a line breakpoint in a function
   called from three places (the call stack each time), a conditional breakpoint
   `i == 37` and the loop's locals, next / stepIn / stepOut, a logpoint, the exit code.
2. Machine level, the smp guest on 2 vCPUs: a breakpoint on a function every vCPU calls,
   continue until each vCPU has hit it, instruction steps, registers, disassembly around
   RIP, an expression, then continue to the guest's exit code.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.dap.client import DapClient  # noqa: E402  (the project's own DAP client)
from tests.guests import build  # noqa: E402


def source_level() -> int:
    guest = build.build_guest("srcdemo", ROOT / "build" / "guests")
    source = str(build.GUEST_DIR / "srcdemo.c")
    from tests.symbols.markers import marker_line

    lines = {name: marker_line(source, name)
             for name in ("leaf_body", "loop_body", "step_call", "fact_test")}
    client = DapClient.spawn()
    try:
        client.start(guest, cpus=2, stopOnEntry=True)
        print(client.output("console").strip())

        def breakpoints(*wanted: dict) -> None:
            done = client.request("setBreakpoints", {"source": {"path": source},
                                                     "breakpoints": list(wanted)})
            for bp in done["body"]["breakpoints"]:
                print(f"  breakpoint at srcdemo.c:{bp['line']} verified={bp['verified']}")

        def where(title: str) -> dict:
            frames = client.request("stackTrace", {"threadId": 1})["body"]["stackFrames"]
            chain = " <- ".join(f"{f['name']}:{f['line']}" for f in frames[:4])
            print(f"  {title}: {chain}")
            return frames[0]

        breakpoints({"line": lines["leaf_body"]})
        client.request("configurationDone")
        client.wait_event("stopped")
        for _ in range(3):
            client.request("continue", {"threadId": 1})
            client.wait_event("stopped")
            where("hit")
        breakpoints({"line": lines["loop_body"], "condition": "i == 37"})
        client.request("continue", {"threadId": 1})
        client.wait_event("stopped")
        frame = where("condition i == 37")
        scopes = client.request("scopes", {"frameId": frame["id"]})["body"]["scopes"]
        local = client.request("variables", {"variablesReference": scopes[0][
            "variablesReference"]})["body"]["variables"]
        print("  locals: " + ", ".join(f"{v['name']}={v['value']}" for v in local))
        breakpoints({"line": lines["step_call"]})
        client.request("continue", {"threadId": 1})
        client.wait_event("stopped")
        where("before the call")
        for command in ("stepIn", "stepOut", "next"):
            client.request(command, {"threadId": 1})
            client.wait_event("stopped")
            where(command)
        breakpoints({"line": lines["fact_test"], "logMessage": "factorial(n={n})"})
        client.request("continue", {"threadId": 1})
        code = client.wait_event("exited")["body"]["exitCode"]
        logged = [e["body"]["output"].strip() for e in client.events_named("output")
                  if e["body"]["output"].startswith("factorial(")]
        print("  logpoint (no stops):", ", ".join(logged))
        print("  guest output:", client.output().strip())
        print("  exit code:", code)
        client.request("disconnect", {})
        assert client.problems == [], client.problems
        return code
    finally:
        client.close()


def main() -> int:
    print("== source level: srcdemo (C with DWARF), 2 vCPUs")
    if source_level() != 0:
        return 1
    print("== machine level: smp, 2 vCPUs")
    guest = build.build_guest("smp", ROOT / "build" / "guests")
    client = DapClient.spawn()
    try:
        client.start(guest, cpus=2, stopOnEntry=True)
        print(client.output("console").strip())
        symbols = {}
        for name in ("smp_iterations", "smp_hit"):  # C: &variable, a function's name
            result = client.request("evaluate", {"expression": f"&{name}" if name ==
                                                 "smp_iterations" else name})["body"]
            symbols[name] = int(result["memoryReference"], 16)
        client.request("writeMemory", {"memoryReference": hex(symbols["smp_iterations"]),
                                       "data": base64.b64encode((3).to_bytes(8, "little"))
                                       .decode()})
        print("breakpoint:", client.request("setFunctionBreakpoints", {
            "breakpoints": [{"name": "smp_hit"}]})["body"]["breakpoints"][0])
        client.request("configurationDone")
        print("stopped:", client.wait_event("stopped")["body"]["reason"])
        seen: dict[int, int] = {}
        while len(seen) < 2:
            client.request("continue", {"threadId": 1})
            body = client.wait_event("stopped")["body"]
            seen[body["threadId"]] = seen.get(body["threadId"], 0) + 1
            frame = client.request("stackTrace", {"threadId": body["threadId"]})["body"]
            print(f"  {body['reason']} on CPU {body['threadId'] - 1} at "
                  f"{frame['stackFrames'][0]['name']}")
        thread = body["threadId"]
        for _ in range(3):
            client.request("next", {"threadId": thread, "granularity": "instruction"})
            client.wait_event("stopped")
            frame = client.request("stackTrace", {"threadId": thread})["body"]["stackFrames"][0]
            print(f"  step -> {frame['name']} ({frame['instructionPointerReference']})")
        scope = next(s for s in client.request("scopes", {"frameId": frame["id"]})["body"][
            "scopes"] if s["name"] == "Registers")
        registers = client.request("variables", {
            "variablesReference": scope["variablesReference"]})["body"]["variables"]
        print("  " + ", ".join(f"{v['name']}={v['value']}" for v in registers
                               if v["name"] in ("RIP", "RSP", "RDI", "RFLAGS")))
        rows = client.request("disassemble", {
            "memoryReference": frame["instructionPointerReference"],
            "instructionOffset": -2, "instructionCount": 5})["body"]["instructions"]
        for row in rows:
            print(f"    {row['address']}  {row['instruction']}")
        print("  rdi * 2 + 1 =", client.request("evaluate", {
            "expression": "rdi * 2 + 1", "frameId": frame["id"]})["body"]["result"])
        client.request("setFunctionBreakpoints", {"breakpoints": []})
        client.request("continue", {"threadId": 1})
        code = client.wait_event("exited")["body"]["exitCode"]
        print("guest output:", client.output().strip())
        print("exit code:", code)
        client.request("disconnect", {})
        assert client.problems == [], client.problems
        return 0 if code == 0 else 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
