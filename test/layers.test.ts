// The module map of docs/design.md, kept true: every import in src/ goes to the same layer or
// one below. Drivers (grad/reverse.ts, persample/build.ts, forward/build.ts) sit above the
// analysis (analysis/analyze.ts), which sits above the rule tables (contexts, registries, rules).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = join(__dirname, '..', 'src');

/** Lowest first; a module's layer is the first whose pattern matches its path below src/. */
const LAYERS: [string, RegExp][] = [
  ['base: errors, ONNX model and .npy/.npz/Zarr files', /^(errors|telemetry)\.ts$|^onnx\/|^io\//],
  ['onnxruntime sessions and tensors, the shape table', /^run\/(session|tensors|stage)\.ts$|^analysis\/(shapes|select|consistency)\.ts$/],
  [
    'rule tables: contexts, rules, registries',
    /^(grad\/(context|convGeometry|registry)\.ts|grad\/rules\/)|^persample\/(rule|registry|batchFirst)\.ts$|^persample\/rules\/|^forward\/(context|rule|registry|slots)\.ts$|^forward\/rules\//,
  ],
  ['analysis: graph preparation (inlining, unrolling), parameters, eligibility', /^analysis\/(analyze|exporter|prepare|unroll)\.ts$/],
  [
    'graph builders (drivers)',
    /^grad\/reverse\.ts$|^persample\/build\.ts$|^forward\/(build|pass|choose|blocks)\.ts$|^loss\/|^stats\/(graph|terms|ops)\.ts$|^verify\/(compare|double|kinks|lower|pattern|perturb)\.ts$/,
  ],
  ['runs: the pipeline, chunks in onnxruntime', /^run\//],
  ['sinks and runs of statistics and verification', /^output\.ts$|^stats\/|^verify\//],
  ['front doors: CLI and library', /^cli\/|^index\.ts$/],
];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : path.endsWith('.ts') ? [path] : [];
  });
}

const layerOf = (module: string) => LAYERS.findIndex(([, pattern]) => pattern.test(module));

describe('the module map', () => {
  const modules = files(SRC).map((path) => relative(SRC, path));

  it('puts every module of src/ in a layer', () => {
    expect(modules.filter((m) => layerOf(m) < 0)).toEqual([]);
  });

  it('has no import upwards', () => {
    const upwards: string[] = [];
    for (const module of modules) {
      const text = readFileSync(join(SRC, module), 'utf8');
      for (const [, target] of text.matchAll(/^(?:import|export)[^;]*?from '(\.[^']+)'/gms)) {
        const imported = normalize(join(dirname(module), target)).replace(/\.js$/, '.ts');
        if (layerOf(imported) > layerOf(module))
          upwards.push(`${module} (${LAYERS[layerOf(module)][0]}) imports ${imported} (${LAYERS[layerOf(imported)][0]})`);
      }
    }
    expect(upwards).toEqual([]);
  });

  it('has no import cycle between modules', () => {
    const imports = new Map<string, string[]>();
    for (const module of modules) {
      const text = readFileSync(join(SRC, module), 'utf8');
      imports.set(
        module,
        // Type-only imports are erased from the JavaScript, so they make no cycle at run time.
        [...text.matchAll(/^(?:import|export)(?! type )[^;]*?from '(\.[^']+)'/gms)].map(([, target]) =>
          normalize(join(dirname(module), target)).replace(/\.js$/, '.ts'),
        ),
      );
    }
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (module: string, path: string[]) => {
      if (state.get(module) === 'done') return;
      if (state.get(module) === 'open') {
        cycles.push([...path.slice(path.indexOf(module)), module].join(' → '));
        return;
      }
      state.set(module, 'open');
      for (const next of imports.get(module) ?? []) visit(next, [...path, module]);
      state.set(module, 'done');
    };
    for (const module of modules) visit(module, []);
    expect(cycles).toEqual([]);
  });
});
