// Starts the adapter as `<python> -m dap_whpx` on stdio, with the first interpreter
// that can import it.
import * as vscode from 'vscode';

import { candidates, Interpreter } from './interpreter';
import { explain, probe } from './probe';

export class AdapterFactory implements vscode.DebugAdapterDescriptorFactory {
  async createDebugAdapterDescriptor(session: vscode.DebugSession):
      Promise<vscode.DebugAdapterDescriptor> {
    const folder = session.workspaceFolder;
    const env = process.env;
    const tried: Array<[Interpreter, string]> = [];
    for (const interpreter of await candidates(folder)) {
      const result = await probe(interpreter, env);
      if (result.ok) {
        const args = ['-m', 'dap_whpx'];
        const log = vscode.workspace.getConfiguration('whpx', folder).get<string>('adapterLog');
        if (log) {
          args.push('--log', log);
        }
        return new vscode.DebugAdapterExecutable(interpreter.command, args,
          { cwd: folder?.uri.fsPath });
      }
      tried.push([interpreter, result.reason]);
    }
    const message = explain(tried);
    // Thrown errors reach the user as a modal "Error" dialog without a way to fix them;
    // a notification with a button to the setting is more useful.
    void vscode.window.showErrorMessage(message, 'Open Settings').then((choice) => {
      if (choice) {
        void vscode.commands.executeCommand('workbench.action.openSettings', 'whpx.pythonPath');
      }
    });
    throw new Error(message);
  }
}
