"""A real debug session, scripted: the adapter as a subprocess over DAP pipes, the smp
sample guest on 2 vCPUs, on the default platform this machine offers.

    .venv/bin/python examples/debug_session.py

It does what a user does in VS Code: a breakpoint on a function every vCPU calls,
continue until each vCPU has hit it, a few instruction steps, registers, disassembly
around RIP, an expression, then continue to the guest's exit code.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.dap.client import DapClient  # noqa: E402  (the project's own DAP client)
from tests.guests import build  # noqa: E402


def main() -> int:
    guest = build.build_guest("smp", ROOT / "build" / "guests")
    client = DapClient.spawn()
    try:
        client.start(guest, cpus=2, stopOnEntry=True)
        print(client.output("console").strip())
        symbols = {}
        for name in ("smp_iterations", "smp_hit"):
            result = client.request("evaluate", {"expression": name})["body"]["result"]
            symbols[name] = int(result.split()[0], 16)
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
