// F5 with no launch.json: offer the default configuration instead of failing, and
// refuse a configuration without a program with a message that says so.
import * as vscode from 'vscode';

export class ConfigurationProvider implements vscode.DebugConfigurationProvider {
  resolveDebugConfiguration(folder: vscode.WorkspaceFolder | undefined,
    config: vscode.DebugConfiguration): vscode.DebugConfiguration | undefined {
    if (!config.type && !config.request && !config.name) {
      // No launch.json at all: VS Code asks for initial configurations first; this path
      // is "Run and Debug" with the whpx type picked from the list.
      config.type = 'whpx';
      config.request = 'launch';
      config.name = 'Debug guest (dap-whpx)';
      config.program = '${workspaceFolder}/build/guest.elf';
      config.stopOnEntry = true;
    }
    if (!config.program) {
      void vscode.window.showErrorMessage(
        "dap-whpx: the launch configuration needs 'program', the guest ELF to boot.");
      return undefined;  // cancels the launch
    }
    if (!config.cwd && folder) {
      config.cwd = folder.uri.fsPath;
    }
    return config;
  }
}
