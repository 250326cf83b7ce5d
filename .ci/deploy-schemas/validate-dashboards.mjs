// Validates Grafana dashboards against Grafana's published dashboard schema: the `Dashboard`
// type that @grafana/schema generates from Grafana's CUE schema (raw/dashboard/x), turned into
// JSON Schema by ts-json-schema-generator and checked with Ajv. Usage:
//   node validate-dashboards.mjs dashboard.json...   (exit 1 and every error when one is invalid)
// The export-only keys __inputs, __elements and __requires (Grafana's "export for sharing
// externally" format, which the import dialog reads and strips) are not part of the stored
// model; they are checked here for the shape the import needs, then removed before validation.
import { createGenerator } from "ts-json-schema-generator";
import Ajv from "ajv";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const typesFile = path.join(
  path.dirname(require.resolve("@grafana/schema/package.json")),
  "dist/types/raw/dashboard/x/types.gen.d.ts",
);
const schema = createGenerator({
  path: typesFile,
  type: "Dashboard",
  skipTypeCheck: true,
  additionalProperties: false,
}).createSchema("Dashboard");
const ajv = new Ajv({ allErrors: true, strict: false });
const validate = ajv.compile(schema);

let failed = 0;
for (const file of process.argv.slice(2)) {
  const dashboard = JSON.parse(readFileSync(file, "utf8"));
  const problems = [];
  const inputs = dashboard.__inputs ?? [];
  if (!Array.isArray(inputs) || !inputs.every((input) => input.name && input.type && input.pluginId)) {
    problems.push("__inputs: every entry needs name, type and pluginId");
  }
  delete dashboard.__inputs;
  delete dashboard.__elements;
  delete dashboard.__requires;
  if (!validate(dashboard)) {
    for (const error of validate.errors) {
      problems.push(`${error.instancePath || "/"} ${error.message} ${JSON.stringify(error.params)}`);
    }
  }
  if (problems.length > 0) {
    failed += 1;
    console.log(`${file}: INVALID`);
    for (const problem of problems) console.log(`  ${problem}`);
  } else {
    console.log(`${file}: valid (${(dashboard.panels ?? []).length} panels)`);
  }
}
process.exit(failed > 0 ? 1 : 0);
