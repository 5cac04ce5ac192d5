// The example project under DebugClient at source level: a line breakpoint in
// primes.c, Locals, stepIn / stepOut / next at line granularity.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lineOf, session, sourcePath, stopped, top } from './example-session.mjs';

test('source: line breakpoint, Locals, stepIn, stepOut, next', async () => {
  await session(async (dc) => {
    const call = lineOf('results[cpu] = count_primes(from, to);');
    const bps = await dc.setBreakpointsRequest({ source: { path: sourcePath },
      breakpoints: [{ line: call }] });
    assert.equal(bps.body.breakpoints[0].verified, true);
    assert.equal(bps.body.breakpoints[0].line, call);
    await stopped(dc, () => dc.configurationDoneRequest());  // entry
    const hit = await stopped(dc, () => dc.continueRequest({ threadId: 1 }));
    assert.equal(hit.reason, 'breakpoint');
    const thread = hit.threadId;
    let frame = await top(dc, thread);
    assert.equal(frame.name, 'guest_main');
    assert.equal(frame.line, call);
    assert.ok(frame.source.path.endsWith('primes.c'), frame.source.path);

    const scopes = await dc.scopesRequest({ frameId: frame.id });
    const locals = scopes.body.scopes.find((s) => s.name === 'Locals');
    assert.ok(locals, scopes.body.scopes.map((s) => s.name).join(', '));
    const vars = await dc.variablesRequest({ variablesReference: locals.variablesReference });
    const value = Object.fromEntries(vars.body.variables.map((v) => [v.name, v.value]));
    assert.equal(Number(value.share), 1000);
    assert.equal(Number(value.from), (thread - 1) * 1000);
    assert.equal(Number(value.to), thread * 1000);

    await dc.setBreakpointsRequest({ source: { path: sourcePath }, breakpoints: [] });
    const stepIn = await stopped(dc, () => dc.stepInRequest({ threadId: thread,
      singleThread: true }));
    assert.equal(stepIn.reason, 'step');
    frame = await top(dc, thread);
    assert.equal(frame.name, 'count_primes');
    assert.equal(frame.line, lineOf('unsigned long count = 0;'));

    await stopped(dc, () => dc.stepOutRequest({ threadId: thread, singleThread: true }));
    frame = await top(dc, thread);
    assert.equal(frame.name, 'guest_main');
    assert.equal(frame.line, call);  // the result is stored into results[cpu] still

    await stopped(dc, () => dc.nextRequest({ threadId: thread, singleThread: true }));
    frame = await top(dc, thread);
    assert.equal(frame.line, lineOf('__atomic_add_fetch(&finished'));
  });
});
