#!/bin/sh
# Runs every case of the reverse rules' checks (test/grad.*.test.ts) in forward mode: each
# file is copied with gradcheck replaced by jvpcheck (same GradCase, tangents against central
# differences), run, and the copies removed; likewise every parameter-slot case
# (test/persample.*.test.ts) with verifyJacobian forced to --mode forward. About 30 s. Known: the float32 Atanh case near
# ±0.9 fails on the finite difference's own error (ε = 1e-2 against atanh''' ≈ 1000 there),
# not on the tangent.
set -e
cd "$(dirname "$0")/.."
trap 'rm -f test/sweep.*.test.ts test/sweep-slots.*.test.ts' EXIT
for file in test/grad.*.test.ts; do
  # The harness file checks gradcheck itself.
  [ "$file" = test/grad.harness.test.ts ] && continue
  name=$(basename "$file" .test.ts | sed 's/^grad\.//')
  {
    echo "import { vi } from 'vitest';"
    echo "vi.mock('./gradcheck.js', async (importOriginal) => {"
    echo "  const original = await importOriginal<typeof import('./gradcheck.js')>();"
    echo "  const { jvpcheck } = await import('./jvpcheck.js');"
    echo "  return { ...original, gradcheck: jvpcheck };"
    echo "});"
    cat "$file"
  } > "test/sweep.$name.test.ts"
done
for file in test/persample.*.test.ts; do
  name=$(basename "$file" .test.ts | sed 's/^persample\.//')
  {
    echo "import { vi } from 'vitest';"
    echo "vi.mock('../src/verify/verify.js', async (importOriginal) => {"
    echo "  const original = await importOriginal<typeof import('../src/verify/verify.js')>();"
    echo "  return { ...original, verifyJacobian: (graph: never, inputs: never, options: object) => original.verifyJacobian(graph, inputs, { ...options, mode: 'forward' } as never) };"
    echo "});"
    cat "$file"
  } > "test/sweep-slots.$name.test.ts"
done
npx vitest run test/sweep.*.test.ts test/sweep-slots.*.test.ts
