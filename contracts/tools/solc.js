#!/usr/bin/env node
// A `solc` executable for forge, around the pinned solc-js (no native solc can be installed
// here). forge only runs `solc --version` and `solc --standard-json [--base-path/--include-path/
// --allow-paths ...]` with the input on stdin.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const args = process.argv.slice(2);
if (args.includes("--version")) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
if (!args.includes("--standard-json")) {
  process.stderr.write("tools/solc.js only supports --version and --standard-json\n");
  process.exit(2);
}
const roots = [process.cwd()];
for (let i = 0; i < args.length; i++) {
  if (["--base-path", "--include-path"].includes(args[i]) && args[i + 1]) roots.push(args[++i]);
}
function findImports(p) {
  for (const root of roots) {
    const full = path.resolve(root, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, "utf8") };
  }
  return { error: `not found: ${p}` };
}
const input = fs.readFileSync(0, "utf8");
process.stdout.write(solc.compile(input, { import: findImports }));
