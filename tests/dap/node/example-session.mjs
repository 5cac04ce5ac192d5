// Shared by the example-*.test.mjs files: a DebugClient session on the example guest
// (examples/smp-guest, two vCPUs) stopped at entry, and small request helpers.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DebugClient } from '@vscode/debugadapter-testsupport';

const python = process.env.WHPX_PYTHON;
export const program = process.env.WHPX_EXAMPLE_ELF;
const platform = process.env.WHPX_PLATFORM || 'emulated';
export const sourcePath = join(program, '..', '..', 'primes.c');
const source = readFileSync(sourcePath, 'utf8').split('\n');

export const lineOf = (text) => source.findIndex((line) => line.includes(text)) + 1;

export async function session(body) {
  // DebugClient passes exactly one argument to the runtime (platform-facts §6).
  const dc = new DebugClient(python, '-mdap_whpx', 'whpx');
  dc.defaultTimeout = 60000;
  await dc.start();
  try {
    // launch() sends initialize first.
    await Promise.all([
      dc.launch({ program, platform, cpus: 2, stopOnEntry: true }),
      dc.waitForEvent('initialized'),
    ]);
    await body(dc);
  } finally {
    await dc.stop();
  }
}

// The body of the stop that `action` causes.
export async function stopped(dc, action) {
  const event = dc.waitForEvent('stopped');
  await action();
  return (await event).body;
}

export async function top(dc, threadId) {
  return (await dc.stackTraceRequest({ threadId })).body.stackFrames[0];
}

export async function registers(dc, threadId) {
  const frame = await top(dc, threadId);
  const scopes = await dc.scopesRequest({ frameId: frame.id });
  const scope = scopes.body.scopes.find((s) => s.name === 'Registers');
  assert.ok(scope, scopes.body.scopes.map((s) => s.name).join(', '));
  const vars = await dc.variablesRequest({ variablesReference: scope.variablesReference });
  // Plain registers read as hex numbers; some (segments, CR2...) carry a decoded suffix.
  const byName = Object.fromEntries(vars.body.variables
    .filter((v) => /^0x[0-9a-f]+$/i.test(v.value)).map((v) => [v.name, BigInt(v.value)]));
  return { frame, byName };
}
