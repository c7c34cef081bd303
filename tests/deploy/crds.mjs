// Validates prometheus-operator resources read as JSON [[name, resource], …] from stdin with
// @kubernetes-models/prometheus-operator (the CRDs' OpenAPI schemas). Helper of k8s.py.
// Usage: node crds.mjs NODE_MODULES_DIR
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = join(process.argv[2], "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");
const models = {
  ServiceMonitor: (await import(pathToFileURL(join(dir, "ServiceMonitor.js")))).ServiceMonitor,
  PrometheusRule: (await import(pathToFileURL(join(dir, "PrometheusRule.js")))).PrometheusRule,
};
let failed = false;
for (const [name, doc] of JSON.parse(readFileSync(0, "utf8"))) {
  const Model = doc.apiVersion === "monitoring.coreos.com/v1" && models[doc.kind];
  if (!Model) {
    console.log(`FAIL ${name}: no schema for ${doc.apiVersion} ${doc.kind}`);
    failed = true;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`ok   ${name} (prometheus-operator CRD schema)`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
