// The adapter driven by DebugClient from @vscode/debugadapter-testsupport: an
// independent DAP client (VS Code's own test client) against the real adapter process.
// Run by tests/dap/test_debugclient.py, which passes the interpreter and guest paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DebugClient } from '@vscode/debugadapter-testsupport';

const python = process.env.WHPX_PYTHON;
const guests = process.env.WHPX_GUESTS;
const platform = process.env.WHPX_PLATFORM || 'emulated';
const hello = `${guests}/hello-O0-dwarf5.elf`;
const spin = `${guests}/spin-O0-dwarf5.elf`;

async function withClient(body) {
  // DebugClient passes exactly one argument to the runtime (platform-facts §6).
  const dc = new DebugClient(python, '-mdap_whpx', 'whpx');
  dc.defaultTimeout = 60000;
  await dc.start();
  try {
    await body(dc);
  } finally {
    await dc.stop();
  }
}

test('function breakpoint, registers, instruction step, continue to exit', async () => {
  await withClient(async (dc) => {
    const init = await dc.initializeRequest();
    assert.ok(init.body.supportsConfigurationDoneRequest);
    assert.ok(init.body.supportsFunctionBreakpoints);
    await Promise.all([
      dc.launch({ program: hello, platform, stopOnEntry: true }),
      dc.waitForEvent('initialized'),
    ]);
    const bps = await dc.setFunctionBreakpointsRequest({ breakpoints: [{ name: 'say_hello' }] });
    assert.equal(bps.body.breakpoints[0].verified, true);
    await Promise.all([dc.configurationDoneRequest(), dc.assertStoppedLocation('entry', {})]);

    await Promise.all([dc.continueRequest({ threadId: 1 }), dc.waitForEvent('stopped')]);
    const threads = await dc.threadsRequest();
    assert.deepEqual(threads.body.threads.map((t) => t.name), ['CPU 0']);
    const stack = await dc.stackTraceRequest({ threadId: 1 });
    assert.equal(stack.body.stackFrames[0].name, 'say_hello');
    const scopes = await dc.scopesRequest({ frameId: stack.body.stackFrames[0].id });
    const registers = await dc.variablesRequest({
      variablesReference: scopes.body.scopes.find((s) => s.name === 'Registers').variablesReference });
    const rip = registers.body.variables.find((v) => v.name === 'RIP');
    assert.equal(BigInt(rip.value), BigInt(stack.body.stackFrames[0].instructionPointerReference));

    const stepped = dc.waitForEvent('stopped');
    await dc.nextRequest({ threadId: 1, granularity: 'instruction' });
    assert.equal((await stepped).body.reason, 'step');

    const exited = dc.waitForEvent('exited');
    await dc.continueRequest({ threadId: 1 });
    assert.equal((await exited).body.exitCode, 42);
    await dc.waitForEvent('terminated');
  });
});

test('pause a running two-vCPU guest', async () => {
  await withClient(async (dc) => {
    await dc.initializeRequest();
    await Promise.all([
      dc.launch({ program: spin, platform, cpus: 2, stopOnEntry: true }),
      dc.waitForEvent('initialized'),
    ]);
    await Promise.all([dc.configurationDoneRequest(), dc.waitForEvent('stopped')]);
    // Make the loop effectively endless, then run and pause it.
    const symbols = await dc.evaluateRequest({ expression: 'spin_iterations', frameId: 1 });
    await dc.send('writeMemory', { memoryReference: symbols.body.result.split(' ')[0],
      data: Buffer.from([0, 0, 0, 0, 0, 0, 0, 0x40]).toString('base64') });
    await dc.continueRequest({ threadId: 1 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const stopped = dc.waitForEvent('stopped');
    await dc.pauseRequest({ threadId: 2 });
    const body = (await stopped).body;
    assert.equal(body.reason, 'pause');
    assert.equal(body.allThreadsStopped, true);
    const threads = await dc.threadsRequest();
    assert.equal(threads.body.threads.length, 2);
  });
});

test('instruction breakpoint, memory round trip, disassembly, disconnect mid-run', async () => {
  const dc = new DebugClient(python, '-mdap_whpx', 'whpx');
  dc.defaultTimeout = 60000;
  await dc.start();
  await dc.initializeRequest();
  await Promise.all([
    dc.launch({ program: spin, platform, cpus: 2, stopOnEntry: true }),
    dc.waitForEvent('initialized'),
  ]);
  const loop = await dc.evaluateRequest({ expression: 'spin_loop', frameId: 1 });
  const loopAddress = loop.body.result.split(' ')[0];
  const bps = await dc.send('setInstructionBreakpoints', {
    breakpoints: [{ instructionReference: loopAddress }] });
  assert.equal(bps.body.breakpoints[0].verified, true);
  await Promise.all([dc.configurationDoneRequest(), dc.waitForEvent('stopped')]);
  const hit = dc.waitForEvent('stopped');
  await dc.continueRequest({ threadId: 1 });
  assert.equal((await hit).body.reason, 'instruction breakpoint');

  const data = Buffer.from('dap-whpx round trip');
  await dc.send('writeMemory', { memoryReference: '0x300000', data: data.toString('base64') });
  const read = await dc.send('readMemory', { memoryReference: '0x300000', count: data.length });
  assert.equal(Buffer.from(read.body.data, 'base64').toString(), data.toString());

  const rows = await dc.send('disassemble', { memoryReference: loopAddress,
    instructionOffset: 0, instructionCount: 2 });
  assert.deepEqual(rows.body.instructions.map((i) => i.instruction), ['dec rcx', 'jne 0x' +
    BigInt(loopAddress).toString(16)]);

  await dc.send('setInstructionBreakpoints', { breakpoints: [] });
  await dc.continueRequest({ threadId: 1 });  // spin_iterations is 10 million: still running
  const exited = new Promise((resolve) => dc._adapterProcess.once('exit', resolve));
  await dc.disconnectRequest({ terminateDebuggee: true });
  assert.equal(await exited, 0);  // the adapter process ended: no thread kept it alive
  dc.stopAdapter();
});
