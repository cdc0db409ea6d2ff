#!/usr/bin/env node
// Compiles contracts/src with the pinned solc-js and writes the artifacts the Python package
// ships: ogpu_prefect/chain/artifacts/<Contract>.json ({abi, bytecode}) plus a manifest holding
// the compiler version and a hash of every source, which the test suite checks for staleness.
//   node tools/build.js           write the artifacts
//   node tools/build.js --check   exit 1 if the committed artifacts differ from a fresh build
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const solc = require("solc");

const HERE = path.resolve(__dirname, "..");
const SRC = path.join(HERE, "src");
const OUT = path.resolve(HERE, "..", "ogpu_prefect", "chain", "artifacts");
const CONTRACTS = ["Manager", "Terminal", "Nexus", "Vault", "Controller", "Source", "Task", "Response"];
const SETTINGS = JSON.parse(fs.readFileSync(path.join(HERE, "solc-settings.json"), "utf8"));

function findImports(p) {
  for (const root of [HERE, path.join(HERE, "node_modules")]) {
    const full = path.resolve(root, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, "utf8") };
  }
  return { error: `not found: ${p}` };
}

const sources = {};
for (const f of fs.readdirSync(SRC).filter((f) => f.endsWith(".sol")).sort()) {
  sources[`src/${f}`] = { content: fs.readFileSync(path.join(SRC, f), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: { ...SETTINGS, outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } } },
};
const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (out.errors || []).filter((e) => e.severity === "error");
for (const e of out.errors || []) if (e.severity === "error") process.stderr.write(e.formattedMessage + "\n");
if (errors.length) process.exit(1);

const files = {};
const manifest = {
  compiler: solc.version(),
  settings: SETTINGS,
  sources: Object.fromEntries(
    Object.entries(sources).map(([k, v]) => [k, crypto.createHash("sha256").update(v.content).digest("hex")])
  ),
  sizes: {},
};
for (const name of CONTRACTS) {
  const c = out.contracts[`src/${name}.sol`][name];
  manifest.sizes[name] = c.evm.deployedBytecode.object.length / 2;
  files[`${name}.json`] = JSON.stringify({ contractName: name, abi: c.abi, bytecode: "0x" + c.evm.bytecode.object }, null, 1) + "\n";
}
files["manifest.json"] = JSON.stringify(manifest, null, 1) + "\n";

if (process.argv.includes("--check")) {
  const stale = Object.entries(files).filter(([f, body]) => {
    const p = path.join(OUT, f);
    return !fs.existsSync(p) || fs.readFileSync(p, "utf8") !== body;
  });
  if (stale.length) {
    process.stderr.write(`stale artifacts: ${stale.map(([f]) => f).join(", ")}; run: node contracts/tools/build.js\n`);
    process.exit(1);
  }
  process.stdout.write("artifacts up to date\n");
} else {
  fs.mkdirSync(OUT, { recursive: true });
  for (const [f, body] of Object.entries(files)) fs.writeFileSync(path.join(OUT, f), body);
  process.stdout.write(`wrote ${Object.keys(files).length} files to ${OUT}\n`);
  for (const [n, s] of Object.entries(manifest.sizes)) process.stdout.write(`  ${n}: ${s} bytes deployed\n`);
}
