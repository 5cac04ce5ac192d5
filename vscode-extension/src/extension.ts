import * as vscode from 'vscode';

import { AdapterFactory } from './adapter';
import { ConfigurationProvider } from './configuration';

export function activate(context: vscode.ExtensionContext): void {
  context.subscriptions.push(
    vscode.debug.registerDebugAdapterDescriptorFactory('whpx', new AdapterFactory()),
    vscode.debug.registerDebugConfigurationProvider('whpx', new ConfigurationProvider()),
  );
}

export function deactivate(): void {
  // Nothing to release: VS Code ends the adapter processes it started.
}
