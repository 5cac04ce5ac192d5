// Races, as tests (both were bugs once): a stop caught on one vCPU just before the other
// ends the guest, and requests that arrive while the adapter sends a stop event.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DebugClient } from '@vscode/debugadapter-testsupport';
import { program, session, stopped } from './example-session.mjs';

// Each vCPU's `lock addl` to `finished` is a data-breakpoint stop, reported exactly once,
// even when vCPU 0 ends the guest before the cancel of vCPU 1's stop reaches it. Both
// writes may land before the first stop is reported (all-stop catches the second vCPU
// after its write; that hit is reported at the next continue, as the engine promises).

test('data breakpoint: each vCPU stops at its own write, each reported once',
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
        assert.ok(Number(now.body.result) >= write, now.body.result);
      }
      assert.deepEqual(writers.sort(), [1, 2]);
    });
  });

// Was an adapter deadlock: the engine-event thread held Session.lock while it waited for
// the event loop to take its event, and the loop waited for the same lock to handle a
// request that came meanwhile. VS Code asks for the threads right around every stop, so
// its sessions hung now and then; here the first stop usually did. Sends no longer wait.
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
