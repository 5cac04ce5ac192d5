// The example project (examples/smp-guest, two vCPUs counting primes) under DebugClient
// from @vscode/debugadapter-testsupport, at machine level: function breakpoint hit by
// both vCPUs, registers, instruction steps, pause of a spinning vCPU, data breakpoint,
// continue to the guest's exit. Run by tests/dap/test_example_client.py, which builds
// the example and passes WHPX_PYTHON, WHPX_EXAMPLE_ELF and WHPX_PLATFORM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { registers, session, stopped } from './example-session.mjs';

test('both vCPUs stop at count_primes with their own arguments; instruction steps', async () => {
  await session(async (dc) => {
    const bps = await dc.setFunctionBreakpointsRequest({
      breakpoints: [{ name: 'count_primes' }] });
    assert.equal(bps.body.breakpoints[0].verified, true);
    await stopped(dc, () => dc.configurationDoneRequest());  // entry

    const seen = new Map();
    for (let hit = 0; hit < 2; hit++) {
      const stop = await stopped(dc, () => dc.continueRequest({ threadId: 1 }));
      assert.equal(stop.reason, 'function breakpoint');
      assert.equal(stop.allThreadsStopped, true);
      const { frame, byName } = await registers(dc, stop.threadId);
      assert.equal(frame.name, 'count_primes');
      assert.equal(byName.RIP, BigInt(frame.instructionPointerReference));
      seen.set(stop.threadId, byName.RDI);  // SysV: the first argument, `from`
    }
    // Each vCPU takes its half of [0, 2000): CPU 0 from 0, CPU 1 from 1000.
    assert.deepEqual([...seen.entries()].sort(), [[1, 0n], [2, 1000n]]);
    const threads = await dc.threadsRequest();
    assert.deepEqual(threads.body.threads.map((t) => t.name), ['CPU 0', 'CPU 1']);

    // Instruction steps move RIP on the stepped vCPU only.
    const before = await registers(dc, 2);
    const other = await registers(dc, 1);
    const step = await stopped(dc, () => dc.nextRequest({ threadId: 2,
      granularity: 'instruction', singleThread: true }));
    assert.equal(step.reason, 'step');
    assert.equal(step.threadId, 2);
    const after = await registers(dc, 2);
    assert.ok(after.byName.RIP > before.byName.RIP);
    assert.ok(after.byName.RIP - before.byName.RIP < 16n);  // one instruction
    assert.equal((await registers(dc, 1)).byName.RIP, other.byName.RIP);
    const stepIn = await stopped(dc, () => dc.stepInRequest({ threadId: 2,
      granularity: 'instruction', singleThread: true }));
    assert.equal(stepIn.reason, 'step');
    assert.notEqual((await registers(dc, 2)).byName.RIP, after.byName.RIP);
  });
});

test('pause a vCPU that spins while the other is held at a breakpoint', async () => {
  await session(async (dc) => {
    await dc.setFunctionBreakpointsRequest({ breakpoints: [{ name: 'count_primes' }] });
    await stopped(dc, () => dc.configurationDoneRequest());  // entry
    // Hold CPU 1 at count_primes, then let CPU 0 alone finish its share: it then spins
    // waiting for CPU 1 (`while (finished != ncpus)`) until it is paused.
    let stop = await stopped(dc, () => dc.continueRequest({ threadId: 1 }));
    if (stop.threadId !== 2) {
      stop = await stopped(dc, () => dc.continueRequest({ threadId: 1 }));
    }
    assert.equal(stop.threadId, 2);
    await dc.setFunctionBreakpointsRequest({ breakpoints: [] });
    await dc.continueRequest({ threadId: 1, singleThread: true });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const paused = await stopped(dc, () => dc.pauseRequest({ threadId: 1 }));
    assert.equal(paused.reason, 'pause');
    assert.equal(paused.threadId, 1);
    const finished = await dc.evaluateRequest({ expression: 'finished', frameId: 1 });
    assert.equal(Number(finished.body.result), 1);  // CPU 0 is done, CPU 1 is not
    const stack = await dc.stackTraceRequest({ threadId: 1 });
    assert.equal(stack.body.stackFrames[0].name.split('+')[0], 'guest_main');

    const exited = dc.waitForEvent('exited');
    await dc.continueRequest({ threadId: 1 });
    assert.equal((await exited).body.exitCode, 0);
  });
});

test('a data breakpoint on `finished` stops at a write to it; continue to exit', async () => {
  await session(async (dc) => {
    // Set it once vCPU 0 has cleared .bss (start.S), a write too: at count_primes.
    await dc.setFunctionBreakpointsRequest({ breakpoints: [{ name: 'count_primes' }] });
    await stopped(dc, () => dc.configurationDoneRequest());  // entry
    await stopped(dc, () => dc.continueRequest({ threadId: 1 }));
    await dc.setFunctionBreakpointsRequest({ breakpoints: [] });
    const info = await dc.send('dataBreakpointInfo', { name: '&finished', bytes: 4 });
    assert.ok(info.body.dataId, info.body.description);
    const set = await dc.send('setDataBreakpoints', {
      breakpoints: [{ dataId: info.body.dataId, accessType: 'write' }] });
    assert.equal(set.body.breakpoints[0].verified, true);
    const hit = await stopped(dc, () => dc.continueRequest({ threadId: 1 }));
    assert.equal(hit.reason, 'data breakpoint');
    // x86 data breakpoints are traps: the write has happened, in guest_main.
    const now = await dc.evaluateRequest({ expression: 'finished', frameId: 1 });
    assert.ok(Number(now.body.result) >= 1, now.body.result);
    const stack = await dc.stackTraceRequest({ threadId: hit.threadId });
    assert.equal(stack.body.stackFrames[0].name, 'guest_main');
    // Each vCPU's write stopping in turn: example-races.test.mjs.

    await dc.send('setDataBreakpoints', { breakpoints: [] });
    const output = [];
    dc.on('output', (event) => output.push(event.body.output));
    const exited = dc.waitForEvent('exited');
    await dc.continueRequest({ threadId: 1 });
    assert.equal((await exited).body.exitCode, 0);  // the guest's own check passed
    await dc.waitForEvent('terminated');
    assert.match(output.join(''), /primes below 2000: 303/);
  });
});
