#!/usr/bin/env node
// Compiles contracts/src/*.sol with the pinned solc-js (package-lock.json) and
// writes contracts/out/<Name>.json: ABI and bytecode, which the Rust crates read
// with alloy's `sol!`. `--check` recompiles and fails if the committed files
// differ, so the bytes in the repository are the bytes of the source.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const root = path.resolve(__dirname, '..');
const srcDir = path.join(__dirname, 'src');
const outDir = path.join(__dirname, 'out');
const check = process.argv.includes('--check');

const sources = {};
for (const f of fs.readdirSync(srcDir).filter((f) => f.endsWith('.sol')).sort()) {
  sources[`src/${f}`] = { content: fs.readFileSync(path.join(srcDir, f), 'utf8') };
}
const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  // No metadata hash: the bytecode must not depend on file paths or comments
  // beyond what the compiler needs.
  metadata: { bytecodeHash: 'none', appendCBOR: false },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};
const input = { language: 'Solidity', sources, settings };

function findImport(p) {
  const candidates = [path.join(root, 'node_modules', p), path.join(__dirname, p)];
  for (const c of candidates) {
    if (fs.existsSync(c)) return { contents: fs.readFileSync(c, 'utf8') };
  }
  return { error: `not found: ${p}` };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + '\n');
if (errors.length) process.exit(1);

let differ = 0;
fs.mkdirSync(outDir, { recursive: true });
for (const file of Object.keys(sources)) {
  for (const [name, c] of Object.entries(output.contracts[file] || {})) {
    const artifact = {
      contractName: name,
      sourceName: file,
      compiler: `solc-js ${solc.version()}`,
      settings: { optimizer: settings.optimizer, evmVersion: settings.evmVersion, metadata: settings.metadata },
      abi: c.abi,
      bytecode: '0x' + c.evm.bytecode.object,
      deployedBytecode: '0x' + c.evm.deployedBytecode.object,
    };
    const text = JSON.stringify(artifact, null, 2) + '\n';
    const target = path.join(outDir, `${name}.json`);
    if (check) {
      const have = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
      if (have !== text) {
        process.stderr.write(`contracts/out/${name}.json differs from what ${file} compiles to; run npm run build-contracts\n`);
        differ += 1;
      } else {
        process.stdout.write(`contracts/out/${name}.json matches ${file}\n`);
      }
    } else {
      fs.writeFileSync(target, text);
      process.stdout.write(`wrote contracts/out/${name}.json (${c.evm.bytecode.object.length / 2} bytes of init code)\n`);
    }
  }
}
process.exit(differ ? 1 : 0);
