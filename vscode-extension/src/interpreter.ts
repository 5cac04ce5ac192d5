// Which Python runs the adapter: the user's setting, else the Python extension's
// selected interpreter, else python3/python from PATH. Each candidate says where it came
// from, so an error message can tell the user which one was tried and why.
import * as vscode from 'vscode';

export interface Interpreter {
  command: string;
  origin: string;
}

// The part of the ms-python.python API we use (its `environments` API, 2023+).
interface PythonEnvironmentsApi {
  environments?: {
    getActiveEnvironmentPath(resource?: vscode.Uri): { path: string } | undefined;
  };
}

export async function candidates(folder: vscode.WorkspaceFolder | undefined):
    Promise<Interpreter[]> {
  const setting = vscode.workspace.getConfiguration('whpx', folder).get<string>('pythonPath');
  if (setting) {
    // An explicit setting is the only candidate: silently trying others would hide a typo.
    return [{ command: setting, origin: 'the setting whpx.pythonPath' }];
  }
  const found: Interpreter[] = [];
  const selected = await pythonExtensionInterpreter(folder);
  if (selected) {
    found.push({ command: selected, origin: 'the interpreter selected in the Python extension' });
  }
  for (const name of process.platform === 'win32' ? ['python', 'py'] : ['python3', 'python']) {
    found.push({ command: name, origin: `'${name}' on PATH` });
  }
  return found;
}

async function pythonExtensionInterpreter(folder: vscode.WorkspaceFolder | undefined):
    Promise<string | undefined> {
  const extension = vscode.extensions.getExtension<PythonEnvironmentsApi>('ms-python.python');
  if (!extension) {
    return undefined;
  }
  try {
    const api = extension.isActive ? extension.exports : await extension.activate();
    return api.environments?.getActiveEnvironmentPath(folder?.uri)?.path || undefined;
  } catch {
    return undefined;  // a broken Python extension must not stop debugging with python3
  }
}
