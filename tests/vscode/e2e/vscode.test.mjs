// VS Code itself (code-server in headless Chromium, driven by puppeteer-core) debugging
// the example project with the packaged extension: F5, a stop at a line breakpoint (F9),
// both vCPUs in the Call Stack, locals and registers in the Variables view; and the
// message for an interpreter that cannot run the adapter. Screenshots go to
// $WHPX_SCREENSHOTS. Run by tests/vscode/test_code_server.py, which builds the .vsix and
// passes every path in the environment.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set (tests/vscode/test_code_server.py sets it)`);
  return value;
};
const python = env('WHPX_PYTHON');
const vsix = env('WHPX_VSIX');
const example = env('WHPX_EXAMPLE');
const screenshots = env('WHPX_SCREENSHOTS');
const platform = process.env.WHPX_PLATFORM || 'emulated';
const chromium = process.env.WHPX_CHROMIUM || '/usr/bin/chromium';
const codeServer = new URL('./node_modules/code-server/out/node/entry.js', import.meta.url)
  .pathname;

const work = mkdtempSync(join(tmpdir(), 'whpx-vscode-'));
const folder = join(work, 'smp-guest');  // a copy, as a user would start from it
let server;
let browser;
let page;

function codeServerArgs(...args) {
  return [codeServer, '--config', join(work, 'config.yaml'), '--user-data-dir',
    join(work, 'data'), '--extensions-dir', join(work, 'extensions'), ...args];
}

function startCodeServer() {
  return new Promise((resolve, reject) => {
    server = spawn(process.execPath, codeServerArgs('--auth', 'none', '--bind-addr',
      '127.0.0.1:0', '--disable-telemetry', '--disable-update-check',
      '--disable-workspace-trust', '--disable-getting-started-override', folder),
    { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const onData = (chunk) => {
      log += chunk;
      const match = /HTTP server listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log);
      if (match) {
        resolve(match[1]);
      }
    };
    server.stdout.on('data', onData);
    server.stderr.on('data', onData);
    server.on('exit', (code) => reject(new Error(`code-server exited ${code}:\n${log}`)));
  });
}

async function shot(name) {
  await page.screenshot({ path: join(screenshots, `${name}.png`) });
}

// Text of the elements matching `selector`, as the user sees it.
async function texts(selector) {
  return page.$$eval(selector, (nodes) => nodes.map((n) => n.textContent.trim()));
}

async function rowWith(selector, text) {
  for (const node of await page.$$(selector)) {
    if ((await node.evaluate((n) => n.textContent)).includes(text)) {
      return node;
    }
  }
  return assert.fail(`no ${selector} with ${text}`);
}

// Expand a tree row (a thread, a scope) unless VS Code already did: click selects it
// (and toggles some rows), the right arrow key expands the selection. The trees
// re-render as the session's state arrives, so each try finds the row afresh.
async function expand(selector, text) {
  const expanded = () => page.evaluate((sel, want) => [...document.querySelectorAll(sel)]
    .some((n) => n.textContent.includes(want) &&
      n.closest('.monaco-list-row')?.getAttribute('aria-expanded') === 'true'), selector, text);
  for (let attempt = 0; attempt < 10 && !await expanded(); attempt++) {
    await (await rowWith(selector, text)).click();
    if (!await expanded()) {
      await page.keyboard.press('ArrowRight');
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  assert.ok(await expanded(), `${selector} ${text} does not expand`);
}

// A command by its palette label; rows show the label without its category at times.
async function runCommand(label) {
  const title = label.replace(/^[^:]+: /, '');
  await page.keyboard.press('F1');
  const input = await page.waitForSelector('.quick-input-widget input', { visible: true });
  await input.type(label);
  await page.waitForFunction((want) => [...document.querySelectorAll(
    '.quick-input-list .monaco-list-row')].some((row) => row.textContent.includes(want)),
  { timeout: 30000 }, title);
  await page.keyboard.press('Enter');
}

before(async () => {
  mkdirSync(screenshots, { recursive: true });
  cpSync(example, folder, { recursive: true, filter: (src) => src !== join(example, 'build') });
  const user = join(work, 'data', 'User');
  mkdirSync(user, { recursive: true });
  writeFileSync(join(user, 'settings.json'), JSON.stringify({
    'whpx.pythonPath': python,
    'whpx.adapterLog': join(work, 'adapter.log'),
    'security.workspace.trust.enabled': false,
    'workbench.startupEditor': 'none',
    'workbench.tips.enabled': false,
    'extensions.ignoreRecommendations': true,
    'window.zoomLevel': 0,
    'chat.disableAIFeatures': true,
    'workbench.secondarySideBar.defaultVisibility': 'hidden',
  }, null, 2));
  // The launch configuration is the example's own, except for the platform: the
  // emulated one behaves the same on every machine CI runs on.
  const launch = join(folder, '.vscode', 'launch.json');
  const text = readFileSync(launch, 'utf8');
  assert.match(text, /"platform": "auto"/);
  writeFileSync(launch, text.replace('"platform": "auto"', `"platform": "${platform}"`));

  execFileSync(process.execPath, codeServerArgs('--install-extension', vsix),
    { stdio: 'pipe' });
  const url = await startCodeServer();
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      '--window-size=1400,900'],
    defaultViewport: { width: 1400, height: 900 },
  });
  page = await browser.newPage();
  page.setDefaultTimeout(90000);
  await page.goto(`${url}/?folder=${encodeURIComponent(folder)}`);
  await page.waitForSelector('.monaco-workbench .part.editor', { visible: true });
  // The explorer lists the folder: the workbench and the extension host are up.
  await page.waitForFunction(() => document.body.innerText.includes('primes.c'));
});

after(async () => {
  // The last state of the page, for a failure's post-mortem (not committed).
  await page?.screenshot({ path: join(work, 'last.png') }).catch(() => {});
  const html = await page?.evaluate(() => document.body.outerHTML).catch(() => '');
  writeFileSync(join(work, 'last.html'), html ?? '');
  console.log(`code-server workspace, logs and last screenshot: ${work}`);
  await browser?.close();
  server?.kill();
});

test('F5 stops both vCPUs at a gutter breakpoint; call stack, locals, registers', async () => {
  // Open the C file and put a breakpoint on the first line of count_primes' body (F9 on
  // the cursor's line, as a user would from the keyboard).
  const source = readFileSync(join(folder, 'primes.c'), 'utf8').split('\n');
  const line = source.findIndex((text) => text.includes('unsigned long count = 0;')) + 1;
  assert.ok(line > 0);
  await runCommand('Go to File');
  await page.keyboard.type('primes.c');
  await page.waitForFunction(() => [...document.querySelectorAll(
    '.quick-input-list .monaco-list-row')].some((row) => row.textContent.includes('primes.c')));
  await page.keyboard.press('Enter');
  await page.waitForSelector('.monaco-editor .view-lines', { visible: true });
  await runCommand('Go to Line/Column');
  await page.keyboard.type(`${line}`);
  await page.keyboard.press('Enter');
  await page.keyboard.press('F9');
  await page.waitForSelector('.monaco-editor .codicon-debug-breakpoint');

  // A wider side bar, so the Call Stack's thread names are not cut in the screenshot.
  const edge = await page.$eval('.part.sidebar', (bar) => bar.getBoundingClientRect().right);
  await page.mouse.move(edge + 1, 300);
  await page.mouse.down();
  await page.mouse.move(edge + 160, 300, { steps: 5 });
  await page.mouse.up();

  await page.keyboard.press('F5');
  // Stopped: the Call Stack lists one thread per vCPU, the stopped one with its reason
  // and its frames, the top one at the breakpoint's line of primes.c.
  await page.waitForFunction(() => {
    const view = document.querySelector('.debug-call-stack');
    return view && /CPU 0/.test(view.textContent) && /CPU 1/.test(view.textContent) &&
      /paused on breakpoint/i.test(view.textContent);
  }, { timeout: 180000 });
  const threads = await texts('.debug-call-stack .thread');
  assert.ok(threads.some((t) => t.startsWith('CPU 0')), threads.join(' | '));
  assert.ok(threads.some((t) => t.startsWith('CPU 1')), threads.join(' | '));
  await expand('.debug-call-stack .thread', 'CPU 0');
  await page.waitForSelector('.debug-call-stack .stack-frame');
  const frames = await texts('.debug-call-stack .stack-frame');
  assert.match(frames[0], new RegExp(`count_primes.*primes\\.c.*${line}:`), frames.join(' | '));
  assert.ok(frames.some((f) => f.startsWith('guest_main')), frames.join(' | '));
  // The editor shows the stop on that line (the top stack frame decoration).
  await page.waitForSelector('.monaco-editor .codicon-debug-stackframe');

  // The Watch view stays empty here: collapsed, its room goes to the Variables.
  await (await rowWith('.pane-header', 'Watch')).click();
  // Variables: count_primes' local and its arguments (vCPU 0 of 2 takes [0, 1000)),
  // and the Registers scope expanded.
  await expand('.debug-variables .scope', 'Locals');
  await page.waitForFunction(() => /count\s*=\s*\d+/.test(
    document.querySelector('.debug-variables')?.textContent ?? ''));
  await expand('.debug-variables .scope', 'Arguments');
  await page.waitForFunction(() => /from\s*=\s*0(?!\d).*to\s*=\s*1000(?!\d)/.test(
    document.querySelector('.debug-variables')?.textContent ?? ''));
  await expand('.debug-variables .scope', 'Registers');
  await page.waitForFunction(() => /RAX/.test(
    document.querySelector('.debug-variables')?.textContent ?? ''));
  await shot('vscode-paused-smp');
  // The tree renders only the rows in view: scroll down to the stack pointer.
  const box = await (await page.$('.debug-variables')).boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.wheel({ deltaY: 200 });
  await page.waitForFunction(() => /RSP/.test(
    document.querySelector('.debug-variables')?.textContent ?? ''));
  const variables = await texts('.debug-variables .monaco-list-row');
  const rsp = variables.find((v) => v.startsWith('RSP'));
  // The boot contract puts vCPU 0's stack at the top of the 64 MiB of RAM.
  assert.match(rsp, /^RSP\s*=\s*0x0000000003ff[0-9a-f]{4}$/, variables.join(' | '));

  // Continue: vCPU 1 reaches the same line and stops there in turn.
  await page.keyboard.press('F5');
  await page.waitForFunction(() => [...document.querySelectorAll('.debug-call-stack .thread')]
    .some((t) => /CPU 1/.test(t.textContent) && /paused on breakpoint/i.test(t.textContent)),
  { timeout: 180000 });

  // Remove the breakpoint (F9 again, the cursor is still on its line) and continue to
  // the guest's exit: the session ends, the serial output is in the Debug Console.
  await page.click('.monaco-editor .view-lines');
  await runCommand('Go to Line/Column');
  await page.keyboard.type(`${line}`);
  await page.keyboard.press('Enter');
  await page.keyboard.press('F9');
  await page.waitForFunction(() => ![...document.querySelectorAll('.monaco-editor [class]')]
    .some((n) => [...n.classList].some((c) => c.startsWith('codicon-debug-breakpoint'))));
  await page.keyboard.press('F5');
  await page.waitForFunction(() => !document.querySelector('.debug-call-stack .thread'),
    { timeout: 180000 });
  await page.waitForFunction(() => document.querySelector('.repl')?.textContent
    .includes('primes below 2000: 303'));
});

test('a wrong whpx.pythonPath gets a message naming it and what to install', async () => {
  // Workspace settings, as a user would point at another interpreter.
  const bogus = join(work, 'no-such-python');
  writeFileSync(join(folder, '.vscode', 'settings.json'),
    JSON.stringify({ 'whpx.pythonPath': bogus }));
  await page.waitForFunction(() => !document.querySelector('.debug-call-stack .thread'));
  await page.click('.monaco-editor .view-lines');
  await page.keyboard.press('F5');
  await page.waitForFunction((path) => [...document.querySelectorAll(
    '.notifications-toasts .notification-list-item, .monaco-dialog-box')]
    .some((n) => n.textContent.includes(path) && n.textContent.includes('not found') &&
      n.textContent.includes('pip install')), { timeout: 120000 }, bogus);
  await shot('vscode-adapter-error');
});
