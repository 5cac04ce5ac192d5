// A known engine bug, as a test: on the emulated platform a write data breakpoint misses
// vCPU 1's `lock addl` to `finished` in most runs (vCPU 0's is always reported).
// tests/dap/test_example_client.py runs it as an expected failure (not strict: the miss
// is intermittent); move it into example.test.mjs once it passes every time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { session, stopped } from './example-session.mjs';

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
