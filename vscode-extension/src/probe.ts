// Before VS Code starts the adapter, check that the interpreter exists and can import
// dap_whpx: otherwise the user sees only "debug adapter process has terminated".
import { execFile } from 'child_process';

import { Interpreter } from './interpreter';

export type ProbeResult = { ok: true } | { ok: false; reason: string };

const PROBE = 'import dap_whpx, sys; print(sys.version.split()[0])';

export function probe(interpreter: Interpreter, env: NodeJS.ProcessEnv):
    Promise<ProbeResult> {
  return new Promise((resolve) => {
    execFile(interpreter.command, ['-c', PROBE], { timeout: 30000, env },
      (error, _stdout, stderr) => {
        if (!error) {
          resolve({ ok: true });
        } else if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
          resolve({ ok: false, reason: 'not found' });
        } else if (/No module named '?dap_whpx/.test(stderr)) {
          resolve({ ok: false, reason: 'the package dap-whpx is not installed in it' });
        } else {
          const detail = stderr.trim().split('\n').pop() || error.message;
          resolve({ ok: false, reason: `it failed: ${detail}` });
        }
      });
  });
}

export function explain(tried: Array<[Interpreter, string]>): string {
  const lines = tried.map(([interp, reason]) =>
    `${interp.command} (${interp.origin}): ${reason}`);
  return 'dap-whpx: cannot start the debug adapter (python -m dap_whpx). Tried ' +
    lines.join('; ') + '. Install it with "python3 -m pip install dap-whpx" ' +
    '(or "pip install -e ." in a dap-whpx checkout) into one of these interpreters, or ' +
    'point the setting whpx.pythonPath at a Python that has it.';
}
