// Prints min+gzip sizes of sente-client, its optional edn module, and, for comparison,
// socket.io-client's browser bundle. `--budget N` fails when the core is over N bytes min+gzip.
// Equivalent shell: npx esbuild --minify --format=esm src/sente.js | gzip -9 | wc -c
//                   npx esbuild --bundle --minify --format=esm --external:./sente.js src/edn.js | gzip -9 | wc -c
import { buildSync } from "esbuild";
import { gzipSync } from "node:zlib";
import { readFileSync } from "node:fs";

const gz = (buf) => gzipSync(buf, { level: 9 }).length;
const build = (entry, external = []) =>
  buildSync({ entryPoints: [entry], bundle: true, minify: true, format: "esm", write: false, external }).outputFiles[0]
    .contents;
const ours = build("src/sente.js");
const edn = build("src/edn.js", ["./sente.js"]);
const sio = readFileSync("node_modules/socket.io-client/dist/socket.io.min.js");
const row = (name, min) => console.log(`${name.padEnd(38)} ${String(min.length).padStart(7)} B min  ${String(gz(min)).padStart(6)} B min+gzip`);
row("sente-client (src/sente.js)", ours);
row("edn module (src/edn.js, without core)", edn);
row("socket.io-client dist/socket.io.min.js", sio);
// `--budget N`: fail when the core's min+gzip size is over N bytes.
const i = process.argv.indexOf("--budget");
if (i > 0 && gz(ours) > +process.argv[i + 1]) {
  console.error(`sente-client is ${gz(ours)} B min+gzip, over the budget of ${process.argv[i + 1]} B`);
  process.exit(1);
}
