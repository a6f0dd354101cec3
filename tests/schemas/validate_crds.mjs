// Validates prometheus-operator custom resources against their schemas, offline.
// stdin: a JSON array of documents. One line per document; exit 1 if any is invalid.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const MODELS = { "monitoring.coreos.com/v1": { ServiceMonitor, PrometheusRule } };

let failed = false;
for (const doc of JSON.parse(readFileSync(0, "utf8"))) {
  const what = `${doc.apiVersion} ${doc.kind} ${doc.metadata?.name}`;
  const Model = MODELS[doc.apiVersion]?.[doc.kind];
  try {
    if (!Model) throw new Error("no schema for this apiVersion and kind");
    new Model(doc).validate();
    console.log(`valid: ${what}`);
  } catch (err) {
    failed = true;
    console.log(`invalid: ${what}: ${err.message}`);
  }
}
process.exit(failed ? 1 : 0);
