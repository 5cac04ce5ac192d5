// Known bugs, as tests: tests/dap/test_example_client.py runs this file as an expected
// failure (not strict: both bugs are races). Move a test into example.test.mjs once it
// passes every time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DebugClient } from '@vscode/debugadapter-testsupport';
import { program, session, stopped } from './example-session.mjs';

// On the emulated platform a write data breakpoint misses vCPU 1's `lock addl` to
// `finished` in most runs (vCPU 0's is always reported).

test('data breakpoint: each vCPU stops at its own write (emulated misses vCPU 1)',
  async () => {
    await session(async (dc) => {
      dc.defaultTimeout = 10000;  // a missed write is a stop that never comes
      await dc.setFunctionBreakpointsRequest({ breakpoints: [{ name: 'count_primes' }] });
      await stopped(dc, () => dc.configurationDoneRequest());  // entry
      await stopped(dc, () => dc.continueRequest({ threadId: 1 }));
      await dc.setFunctionBreakpointsRequest({ breakpoints: [] });
      const info = await dc.send('dataBreakpointInfo', { name: '&finished', bytes: 4 });
      await dc.send('setDataBreakpoints', {
        breakpoints: [{ dataId: info.body.dataId, accessType: 'write' }] });
      const writers = [];
      for (let write = 1; write <= 2; write++) {
        const hit = await stopped(dc, () => dc.continueRequest({ threadId: 1 }));
        assert.equal(hit.reason, 'data breakpoint');
        writers.push(hit.threadId);
        const now = await dc.evaluateRequest({ expression: 'finished', frameId: 1 });
        assert.equal(Number(now.body.result), write);
      }
      assert.deepEqual(writers.sort(), [1, 2]);
    });
  });

// An adapter deadlock: the engine-event thread holds Session.lock while it waits for the
// event loop to take its event (anyio.from_thread.run_sync), and the loop waits for the
// same lock to handle a request that came meanwhile. VS Code asks for the threads right
// around every stop, so its sessions hang now and then; here the first stop usually does.
test('requests racing stop events are all answered (adapter deadlock)', async () => {
  for (let run = 0; run < 10; run++) {
    const dc = new DebugClient(process.env.WHPX_PYTHON, '-mdap_whpx', 'whpx');
    dc.defaultTimeout = 5000;
    await dc.start();
    let answered = false;
    try {
      await Promise.all([
        dc.launch({ program, platform: 'emulated', cpus: 2, stopOnEntry: true }),
        dc.waitForEvent('initialized'),
      ]);
      await dc.setFunctionBreakpointsRequest({ breakpoints: [{ name: 'is_prime' }] });
      await stopped(dc, () => dc.configurationDoneRequest());  // entry
      // The first hit sends two events (breakpoint verified, stopped): a wide window.
      const stop = dc.waitForEvent('stopped');
      await dc.continueRequest({ threadId: 1 });
      await Promise.all([stop, dc.threadsRequest(), dc.threadsRequest(), dc.threadsRequest()]);
      answered = true;
    } finally {
      if (answered) {
        await dc.stop();
      } else {
        dc.stopAdapter();  // a deadlocked adapter never answers disconnect
      }
    }
  }
});
