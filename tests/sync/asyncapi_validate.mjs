// Validates an AsyncAPI document with the official parser, @asyncapi/parser (tests/sync/test_asyncapi.py).
//
//   node asyncapi_validate.mjs VALIDATOR_DIR DOCUMENT
//
// VALIDATOR_DIR is the npm prefix the parser is installed in (`./dev setup`: .venv/asyncapi-validator).
// Every diagnostic goes to stderr, one a line: "SEVERITY CODE at PATH: MESSAGE". stdout gets the
// document as the parser's YAML reader (@stoplight/yaml) reads it, as JSON, so the caller can
// check that the YAML says what its writer meant.
// Exit status: 0 no error diagnostic, 1 some, 2 usage, 3 the parser is not installed.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const [validatorDir, documentPath] = process.argv.slice(2);
if (!validatorDir || !documentPath) {
  console.error("usage: node asyncapi_validate.mjs VALIDATOR_DIR DOCUMENT");
  process.exit(2);
}

let asyncapi;
let yaml;
try {
  const parserPath = createRequire(path.resolve(validatorDir, "package.json")).resolve("@asyncapi/parser");
  asyncapi = createRequire(parserPath)(parserPath);
  yaml = createRequire(parserPath)("@stoplight/yaml");
} catch (error) {
  console.error(`@asyncapi/parser is not installed in ${validatorDir} (${error.code ?? error.message}): run ./dev setup`);
  process.exit(3);
}

const severities = ["error", "warning", "info", "hint"];
const { document, diagnostics } = await asyncapi.fromFile(new asyncapi.Parser(), documentPath).parse();
for (const d of diagnostics) {
  console.error(`${severities[d.severity] ?? d.severity} ${d.code} at /${d.path.join("/")}: ${d.message}`);
}
console.log(JSON.stringify(yaml.parse(await readFile(documentPath, "utf8"))));
const errors = diagnostics.filter((d) => d.severity === asyncapi.DiagnosticSeverity.Error);
if (errors.length > 0 || document === undefined) {
  console.error(`${documentPath}: ${errors.length} error(s); not a valid AsyncAPI document`);
  process.exit(1);
}
