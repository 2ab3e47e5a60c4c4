#!/usr/bin/env bash
# The package as users get it: `npm pack`, check the tarball's files, `npm install <tarball>` into
# an empty project, import both entry points by package name in Node, and type-check the typed
# usage example (test/types/usage.ts) against the installed package's declarations.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
tarball="$tmp/$(npm pack --silent --pack-destination "$tmp" | tail -n 1)"
echo "pack-check: $(basename "$tarball") ($(wc -c < "$tarball") bytes)"
files="$(tar -tzf "$tarball" | sort)"
for f in package/package.json package/README.md package/src/sente.js package/src/sente.d.ts package/src/edn.js package/src/edn.d.ts; do
  grep -qx "$f" <<<"$files" || { echo "pack-check: $f missing from the tarball:"; echo "$files"; exit 1; }
done
if grep -Ev '^package/(package\.json|README\.md|LICENSE[^/]*|src/[^/]+)$' <<<"$files"; then
  echo "pack-check: unexpected files in the tarball (above)"; exit 1
fi
mkdir "$tmp/app"
cd "$tmp/app"
echo '{ "name": "app", "private": true, "type": "module" }' > package.json
npm install --silent --no-audit --no-fund --offline "$tarball"
cat > main.js <<'JS'
import assert from "node:assert/strict";
import * as sente from "sente-client";
import * as ednMod from "sente-client/edn";
for (const k of ["createChannelSocket", "createRouter", "kw", "encode", "decode", "SenteError", "ChannelSocket"])
  assert.ok(sente[k], "sente-client exports " + k);
assert.equal(ednMod.print(ednMod.read("{:a [1 2]}")), "{:a [1 2]}");
assert.ok(ednMod.edn.pack);
const chsk = sente.createChannelSocket("http://127.0.0.1:9/chsk", { autoConnect: false });
const p = chsk.request("demo/echo", 1, 5000); // queued before open
chsk.disconnect();
await assert.rejects(p, (e) => e instanceof sente.SenteError && e.code == "closed");
console.log("pack-check: import by package name OK");
JS
node main.js
# Types from the installed package (not the source tree).
cp "$OLDPWD/test/types/usage.ts" .
cat > tsconfig.json <<'JSON'
{ "compilerOptions": { "strict": true, "noEmit": true, "target": "es2022", "module": "nodenext",
    "moduleResolution": "nodenext", "lib": ["es2022", "dom"], "types": [] }, "files": ["usage.ts"] }
JSON
"$OLDPWD/node_modules/.bin/tsc" -p .
echo "pack-check: types of the installed package OK"
