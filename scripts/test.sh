#!/usr/bin/env bash
# Installs everything, then runs every check CI runs: types, lint, unit tests (no root) and
# kernel tests (root, real namespaces and packets). With CI=true a kernel test that cannot run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== typecheck"; npx tsc -p tsconfig.test.json
echo "== lint"; npx eslint . --max-warnings=0
echo "== format"; npx prettier --check . --log-level=warn

mkdir -p .switchyard
bash scripts/leftovers.sh --list > .switchyard/kernel-before.txt
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.switchyard/test-results.json "$@" || status=$?

# One plain closing line that any CI log reader understands.
node -e '
  const r = JSON.parse(require("fs").readFileSync(".switchyard/test-results.json", "utf8"));
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' || true
bash scripts/leftovers.sh .switchyard/kernel-before.txt || status=1
exit "$status"
