#!/usr/bin/env node
// Launcher: runs the compiled CLI (npm install builds it into dist/).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// No telemetry files from onnxruntime (see src/telemetry.ts); set before its library loads.
process.env.ORT_DISABLE_TELEMETRY ??= '1';
const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('jacobian: the CLI is not built yet; run `npm install` (or `npm run build`) in the onnx-jacobian folder\n');
  process.exit(3);
}
let main;
try {
  ({ main } = await import(entry.href));
} catch (err) {
  // Most often onnxruntime's native library failing to load: too little memory (ulimit -v), a
  // missing system library, or an unsupported platform. Exit 3: a runtime failure, not a refusal.
  const message = String(err?.message ?? err).split('\n')[0];
  process.stderr.write(
    `jacobian: cannot load onnxruntime-node: ${message}\n` +
      '  check the memory limit (ulimit -v), that the platform is one onnxruntime-node ships binaries for, and reinstall with npm install\n',
  );
  if (process.env.JACOBIAN_DEBUG) process.stderr.write(`${err?.stack ?? ''}\n`);
  process.exit(3);
}
process.exitCode = await main(process.argv);
