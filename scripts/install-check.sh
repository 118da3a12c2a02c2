#!/usr/bin/env bash
# Installs the packed tarball as a user would, on a machine that reaches only the npm
# registry: into an empty project and globally (under a temporary prefix), with the one
# documented step (ONNXRUNTIME_NODE_INSTALL=skip); then runs the installed CLI on the
# shipped example. Not part of `npm test` (it takes a minute and needs the registry).
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
npm pack --pack-destination "$work" --silent > "$work/name"
tarball="$work/$(tail -n1 "$work/name")"
export ONNXRUNTIME_NODE_INSTALL=skip

mkdir "$work/project" && cd "$work/project" && npm init -y > /dev/null
npm install "$tarball" --no-audit --no-fund --loglevel=error
seed=node_modules/onnx-jacobian/fixtures/seed
npx jacobian check "$seed/model.onnx" | tail -n1
npx jacobian "$seed/model.onnx" -i "$seed/input.npy" -o J.npy
node -e "import('onnx-jacobian').then(async (m) => { const r = await m.computeJacobian('$seed/model.onnx', { input: '$seed/input.npy' }); console.log('library:', r.blocks[0].shape.join(' x ')); })"

npm install -g --prefix "$work/global" "$tarball" --no-audit --no-fund --loglevel=error
"$work/global/bin/jacobian" --version
"$work/global/bin/jacobian" check "$work/global/lib/node_modules/onnx-jacobian/fixtures/seed/model.onnx" | tail -n1
echo "install check passed"
