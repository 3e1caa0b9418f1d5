#!/usr/bin/env bash
# CI step for the TypeScript bindings: install the pinned generator and compiler from package-lock.json, compile
# schemas/json to TypeScript (out/) and type-check the recorded answers in check.ts with `tsc --strict --noEmit`.
# Needs node and npm, and the npm registry; nothing else. Exits non-zero when the recorded JSON does not fit the types.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm run check
