// What `npm pack` ships: what users run and read, nothing else (the real install from the
// tarball, offline but for the npm registry, is scripts/install-check.sh: npm run install-check).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(__dirname, '..');

describe('npm pack', () => {
  it('ships the CLI, the compiled library, the docs the help points to and the example, and no sources, tests or maps', () => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const files: string[] = JSON.parse(out)[0].files.map((f: { path: string }) => f.path);
    expect(files.filter((f) => !f.startsWith('dist/')).sort()).toEqual([
      'README.md',
      'bin/jacobian.js',
      'docs/check-json.md',
      'docs/ci.md',
      'fixtures/seed/input.npy',
      'fixtures/seed/model.onnx',
      'package.json',
    ]);
    expect(files).toContain('dist/cli/jacobian.js');
    expect(files).toContain('dist/index.d.ts');
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    // Every doc the CLI's help names is in the package.
    const help = readFileSync(join(ROOT, 'src', 'cli', 'main.ts'), 'utf8');
    for (const doc of help.match(/docs\/[\w-]+\.md/g) ?? []) expect(files).toContain(doc);
  });

  it('asks for a Node.js that has zlib.crc32 (20.15) and needs no npm config file', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    expect(pkg.engines.node).toBe('>=20.15');
    expect(pkg.allowScripts['onnxruntime-node']).toBe(false);
  });
});
