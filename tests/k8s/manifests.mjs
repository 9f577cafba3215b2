// Licensed under the Apache License, Version 2.0.
//
// Offline checks of the Kubernetes manifests in kubernetes/: every object
// against the Kubernetes JSON schemas of the kubernetes-models package,
// field names against the names that package's API types know, and the
// promises the README makes (replicas, probes, resources, spool volume,
// drain time, Secret, ConfigMap, Service, HPA, PDB, ClickHouse cluster).
// check(docs) returns a list of problems; empty means valid.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, "..", "..");
export const k8sDir = path.join(repo, "kubernetes");
const require = createRequire(import.meta.url);

// ---- loading -----------------------------------------------------------

export function yamlFiles(dir = k8sDir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...yamlFiles(p));
    else if (/\.ya?ml$/.test(entry.name)) out.push(p);
  }
  return out.sort();
}

// Every document of every file, with the file it came from.
export function load(dir = k8sDir) {
  const docs = [];
  for (const file of yamlFiles(dir)) {
    const text = fs.readFileSync(file, "utf8");
    for (const d of YAML.parseAllDocuments(text)) {
      if (d.errors.length) {
        throw new Error(`${file}: ${d.errors.map((e) => e.message).join("; ")}`);
      }
      const obj = d.toJS();
      if (obj !== null && obj !== undefined) {
        docs.push({ file: path.relative(dir, file), obj });
      }
    }
  }
  return docs;
}

// ---- schemas -----------------------------------------------------------

function modelModule(apiVersion) {
  // "v1" -> kubernetes-models/v1, "apps/v1" -> kubernetes-models/apps/v1
  return `kubernetes-models/${apiVersion}`;
}

export async function schemaProblems(doc) {
  const { apiVersion, kind } = doc.obj;
  let mod;
  try {
    mod = await import(modelModule(apiVersion));
  } catch {
    return [`${doc.file}: unknown apiVersion ${apiVersion}`];
  }
  const Model = mod[kind];
  if (typeof Model !== "function") {
    return [`${doc.file}: unknown kind ${kind} in ${apiVersion}`];
  }
  try {
    new Model(doc.obj).validate();
  } catch (e) {
    return [`${doc.file}: ${kind} ${doc.obj.metadata?.name}: ${e.message}`];
  }
  return [];
}

// Field names that the Kubernetes API types declare, read from the type
// declarations that ship with kubernetes-models.
let knownNames = null;
export function knownFieldNames() {
  if (knownNames) return knownNames;
  knownNames = new Set();
  const roots = [
    path.dirname(require.resolve("kubernetes-models/package.json")),
    path.dirname(require.resolve("@kubernetes-models/apimachinery/package.json")),
  ];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.name.endsWith(".d.ts")) {
        const text = fs.readFileSync(p, "utf8");
        for (const m of text.matchAll(/^\s+"([A-Za-z0-9_$.-]+)"\??:/gm)) {
          knownNames.add(m[1]);
        }
      }
    }
  };
  roots.forEach(walk);
  return knownNames;
}

// Maps whose keys are data (label names, resource names, file names).
const FREE_FORM = new Set([
  "labels", "annotations", "matchLabels", "data", "stringData",
  "binaryData", "nodeSelector", "requests", "limits", "capacity",
]);

export function unknownFields(doc) {
  const names = knownFieldNames();
  const out = [];
  const visit = (value, trail) => {
    if (Array.isArray(value)) {
      value.forEach((v, i) => visit(v, trail.concat(String(i))));
      return;
    }
    if (value === null || typeof value !== "object") return;
    const last = trail[trail.length - 1];
    if (FREE_FORM.has(last)) return;
    if (doc.obj.kind === "Service" && trail.join(".") === "spec.selector") return;
    for (const [k, v] of Object.entries(value)) {
      if (!names.has(k)) out.push(`${doc.file}: unknown field ${trail.concat(k).join(".")}`);
      visit(v, trail.concat(k));
    }
  };
  visit(doc.obj, []);
  return out;
}

// ---- the promises --------------------------------------------------------

const find = (docs, kind, name) =>
  docs.map((d) => d.obj).find((o) => o.kind === kind && o.metadata?.name === name);

const matches = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => labels?.[k] === v) &&
  Object.keys(selector || {}).length > 0;

const envOf = (c) => Object.fromEntries((c.env || []).map((e) => [e.name, e]));

// A probe's port (a number or a port name) must be a port of the container.
function portOk(c, port) {
  return (c.ports || []).some((p) => p.containerPort === port || p.name === port);
}

function parseQuantitySeconds(v) {
  return Number.parseInt(String(v), 10);
}

export function checkApache(docs) {
  const p = [];
  const sts = find(docs, "StatefulSet", "imchallenge") || find(docs, "Deployment", "imchallenge");
  if (!sts) return ["no StatefulSet or Deployment named imchallenge"];
  const spec = sts.spec;
  const pod = spec.template.spec;
  const labels = spec.template.metadata?.labels;
  if (!(spec.replicas >= 2)) p.push(`imchallenge: replicas ${spec.replicas} < 2`);
  if (!matches(spec.selector?.matchLabels, labels)) p.push("imchallenge: selector does not match the pod labels");
  const c = pod.containers.find((x) => x.name === "httpd") || pod.containers[0];
  for (const kind of ["requests", "limits"]) {
    for (const r of ["cpu", "memory"]) {
      if (!c.resources?.[kind]?.[r]) p.push(`imchallenge: no resources.${kind}.${r}`);
    }
  }
  const probe = (name, wanted) => {
    const pr = c[name];
    if (!pr?.httpGet) return p.push(`imchallenge: no ${name} with httpGet`);
    if (pr.httpGet.path !== wanted) p.push(`imchallenge: ${name} on ${pr.httpGet.path}, not ${wanted}`);
    if (!portOk(c, pr.httpGet.port)) p.push(`imchallenge: ${name} port ${pr.httpGet.port} is not a container port`);
  };
  probe("readinessProbe", "/readyz");
  probe("livenessProbe", "/healthz");
  const env = envOf(c);
  const envPort = Number.parseInt(env.IMC_PORT?.value ?? "8080", 10);
  if (!(c.ports || []).some((x) => x.containerPort === envPort)) {
    p.push(`imchallenge: IMC_PORT ${envPort} is not a container port`);
  }
  // The spool on a volume: a claim template (StatefulSet) or a pod volume.
  const mounts = c.volumeMounts || [];
  const spool = mounts.find((m) => m.mountPath === "/var/spool/imchallenge");
  const claims = (spec.volumeClaimTemplates || []).map((t) => t.metadata.name);
  const volumes = Object.fromEntries((pod.volumes || []).map((v) => [v.name, v]));
  if (!spool) p.push("imchallenge: nothing mounted at /var/spool/imchallenge");
  else if (!claims.includes(spool.name) && !volumes[spool.name]) {
    p.push(`imchallenge: spool volume ${spool.name} is not defined`);
  }
  for (const m of mounts) {
    if (!claims.includes(m.name) && !volumes[m.name]) p.push(`imchallenge: mount ${m.name} has no volume`);
  }
  // Long enough to drain: the grace period exceeds Apache's graceful stop.
  const drain = parseQuantitySeconds(env.IMC_GRACEFUL_SHUTDOWN_TIMEOUT?.value ?? "20");
  const grace = pod.terminationGracePeriodSeconds ?? 30;
  if (!(grace >= drain + 10)) p.push(`imchallenge: terminationGracePeriodSeconds ${grace} does not cover a ${drain} s drain`);
  if (!c.lifecycle?.preStop?.exec?.command?.join(" ").includes("WINCH")) {
    p.push("imchallenge: no preStop hook for Apache's graceful stop (SIGWINCH)");
  }
  // The password from a Secret, as a file the module reads.
  const pwFile = env.IMC_CLICKHOUSE_PASSWORD_FILE?.value;
  // The deepest mount holding the file (a Secret inside the /run emptyDir).
  const pwMount = pwFile && mounts
    .filter((m) => pwFile.startsWith(m.mountPath + "/"))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  const pwVol = pwMount && volumes[pwMount.name];
  if (!pwVol?.secret?.secretName) p.push("imchallenge: IMC_CLICKHOUSE_PASSWORD_FILE is not in a Secret volume");
  else {
    const file = pwFile.slice(pwMount.mountPath.length + 1);
    const items = pwVol.secret.items;
    if (items && !items.some((i) => i.path === file)) p.push(`imchallenge: the Secret volume has no item ${file}`);
  }
  if (Object.values(env).some((e) => /PASSWORD$/.test(e.name) && e.value)) {
    p.push("imchallenge: a password in plain environment");
  }
  // The Apache configuration from a ConfigMap of these manifests.
  const conf = mounts.find((m) => m.mountPath === "/etc/apache2/imchallenge.d");
  const cmName = conf && volumes[conf.name]?.configMap?.name;
  if (!cmName) p.push("imchallenge: no ConfigMap mounted at /etc/apache2/imchallenge.d");
  else if (!find(docs, "ConfigMap", cmName)) p.push(`imchallenge: ConfigMap ${cmName} is not defined`);
  else {
    const keys = Object.keys(find(docs, "ConfigMap", cmName).data || {});
    if (!keys.some((k) => k.endsWith(".conf"))) p.push(`imchallenge: ConfigMap ${cmName} has no *.conf`);
  }
  if (env.IMC_CREATE_SCHEMA?.value !== "Off") p.push("imchallenge: IMC_CREATE_SCHEMA must be Off with the cluster schema");
  // A Service in front of the pods, on a port the container has.
  const svc = docs.map((d) => d.obj).find((o) => o.kind === "Service" && o.metadata.name === "imchallenge");
  if (!svc) p.push("no Service named imchallenge");
  else {
    if (!matches(svc.spec.selector, labels)) p.push("Service imchallenge does not select the pods");
    for (const port of svc.spec.ports) {
      if (!portOk(c, port.targetPort ?? port.port)) p.push(`Service imchallenge: targetPort ${port.targetPort} is not a container port`);
    }
  }
  if (sts.kind === "StatefulSet" && !find(docs, "Service", spec.serviceName)) {
    p.push(`imchallenge: serviceName ${spec.serviceName} is not a Service`);
  }
  // Autoscaled, and protected from voluntary disruptions.
  const hpa = docs.map((d) => d.obj).find((o) => o.kind === "HorizontalPodAutoscaler");
  if (!hpa) p.push("no HorizontalPodAutoscaler");
  else {
    const ref = hpa.spec.scaleTargetRef;
    if (ref.kind !== sts.kind || ref.name !== sts.metadata.name || ref.apiVersion !== sts.apiVersion) {
      p.push(`HPA targets ${ref.apiVersion}/${ref.kind}/${ref.name}, not the Apache ${sts.kind}`);
    }
    if (!(hpa.spec.minReplicas >= 2)) p.push("HPA minReplicas < 2");
    if (!(hpa.spec.maxReplicas > hpa.spec.minReplicas)) p.push("HPA maxReplicas <= minReplicas");
    if (!(hpa.spec.metrics || []).length) p.push("HPA has no metrics");
  }
  const pdb = docs.map((d) => d.obj).find((o) => o.kind === "PodDisruptionBudget" && matches(o.spec.selector?.matchLabels, labels));
  if (!pdb) p.push("no PodDisruptionBudget selects the Apache pods");
  return p;
}

// The hosts of <tag>...</tag> elements inside an XML fragment.
const xmlValues = (xml, tag) => [...xml.matchAll(new RegExp(`<${tag}>([^<]*)</${tag}>`, "g"))].map((m) => m[1].trim());

export function checkClickHouse(docs, schemaText) {
  const p = [];
  const schemaSql = schemaText.replace(/^\s*--.*$/gm, "");
  const objs = docs.map((d) => d.obj);
  const ns = (o) => o.metadata.namespace || "imchallenge";
  const podHosts = (sts) =>
    Array.from({ length: sts.spec.replicas }, (_, i) =>
      `${sts.metadata.name}-${i}.${sts.spec.serviceName}.${ns(sts)}.svc.cluster.local`);
  const shardSets = objs.filter((o) => o.kind === "StatefulSet" && /^clickhouse-shard\d+$/.test(o.metadata.name));
  if (shardSets.length < 2) p.push(`ClickHouse: ${shardSets.length} shard StatefulSets, want >= 2`);
  for (const s of shardSets) {
    if (!(s.spec.replicas >= 2)) p.push(`${s.metadata.name}: replicas ${s.spec.replicas} < 2`);
    if (!find(docs, "Service", s.spec.serviceName)) p.push(`${s.metadata.name}: serviceName ${s.spec.serviceName} is not a Service`);
    const env = envOf(s.spec.template.spec.containers[0]);
    const want = s.metadata.name.replace("clickhouse-shard", "");
    if (env.CLICKHOUSE_SHARD?.value !== want) p.push(`${s.metadata.name}: CLICKHOUSE_SHARD is not ${want}`);
  }
  const cm = find(docs, "ConfigMap", "clickhouse");
  if (!cm) return p.concat("no ConfigMap named clickhouse");
  const xml = cm.data["cluster.xml"] || "";
  const cluster = /<remote_servers>\s*<([A-Za-z0-9_]+)>/.exec(xml)?.[1];
  const sqlClusters = new Set([...schemaSql.matchAll(/ON CLUSTER ([A-Za-z0-9_]+)/g)].map((m) => m[1]));
  if (!cluster) p.push("ClickHouse: no cluster in remote_servers");
  else if (sqlClusters.size !== 1 || !sqlClusters.has(cluster)) {
    p.push(`ClickHouse: schema-cluster.sql uses ON CLUSTER ${[...sqlClusters]}, the servers define ${cluster}`);
  }
  // remote_servers: one <shard> per StatefulSet, its replicas = its pods.
  const shards = [...xml.matchAll(/<shard>([\s\S]*?)<\/shard>/g)].map((m) => xmlValues(m[1], "host"));
  const want = shardSets.map(podHosts);
  if (JSON.stringify(shards) !== JSON.stringify(want)) {
    p.push(`ClickHouse: remote_servers shards ${JSON.stringify(shards)} are not the pods ${JSON.stringify(want)}`);
  }
  if ((xml.match(/<internal_replication>true<\/internal_replication>/g) || []).length !== shards.length) {
    p.push("ClickHouse: every shard needs internal_replication true");
  }
  for (const macro of ["shard", "replica"]) {
    if (!new RegExp(`<${macro}[ >]`).test(xml.split("<macros>")[1] || "")) p.push(`ClickHouse: no macro {${macro}}`);
  }
  for (const m of xml.matchAll(/from_env="([A-Z_]+)"/g)) {
    if (m[1] === "HOSTNAME") continue;
    for (const s of shardSets) {
      if (!envOf(s.spec.template.spec.containers[0])[m[1]]) p.push(`${s.metadata.name}: no env ${m[1]} for the config`);
    }
  }
  // Keeper: an odd quorum of >= 3, named in <zookeeper> and in Raft.
  const keeper = find(docs, "StatefulSet", "clickhouse-keeper");
  if (!keeper) return p.concat("no StatefulSet clickhouse-keeper");
  if (!(keeper.spec.replicas >= 3 && keeper.spec.replicas % 2 === 1)) p.push(`clickhouse-keeper: replicas ${keeper.spec.replicas} is not an odd number >= 3`);
  const zk = xmlValues(xml.split("<zookeeper>")[1]?.split("</zookeeper>")[0] || "", "host");
  if (JSON.stringify(zk) !== JSON.stringify(podHosts(keeper))) p.push(`ClickHouse: <zookeeper> hosts ${zk} are not the Keeper pods`);
  const kcm = find(docs, "ConfigMap", "clickhouse-keeper");
  const raft = xmlValues(Object.values(kcm?.data || {}).join(""), "hostname");
  if (JSON.stringify(raft) !== JSON.stringify(podHosts(keeper))) p.push(`clickhouse-keeper: raft servers ${raft} are not its pods`);
  // Secrets: every secretKeyRef names the generated Secret and a key of it.
  const kust = objs.find((o) => o.kind === "Kustomization");
  const generated = new Set((kust?.secretGenerator || []).map((g) => g.name));
  const secretKeys = new Set(["password", "cluster-secret"]);
  const visit = (v) => {
    if (Array.isArray(v)) return v.forEach(visit);
    if (v && typeof v === "object") {
      if (v.secretKeyRef) {
        if (!generated.has(v.secretKeyRef.name) && !find(docs, "Secret", v.secretKeyRef.name)) p.push(`secretKeyRef to unknown Secret ${v.secretKeyRef.name}`);
        if (!secretKeys.has(v.secretKeyRef.key)) p.push(`secretKeyRef to unknown key ${v.secretKeyRef.key}`);
      }
      if (v.secret?.secretName && !generated.has(v.secret.secretName)) p.push(`Secret volume of unknown Secret ${v.secret.secretName}`);
      Object.values(v).forEach(visit);
    }
  };
  objs.filter((o) => o.kind !== "Kustomization").forEach(visit);
  // Images pinned, not floating (the module's own image is set by kustomize).
  for (const o of objs) {
    for (const c of o.spec?.template?.spec?.containers || []) {
      if (c.image.startsWith("clickhouse/") && (!c.image.includes(":") || c.image.endsWith(":latest"))) {
        p.push(`${o.metadata.name}: image ${c.image} is not pinned`);
      }
    }
  }
  if (!/ReplicatedMergeTree\(\s*'[^']*\{shard\}[^']*',\s*'\{replica\}'\)/.test(schemaSql)) {
    p.push("schema-cluster.sql: ReplicatedMergeTree without {shard}/{replica}");
  }
  const statements = schemaSql.split(";");
  for (const t of ["events"]) {
    const head = new RegExp(`CREATE TABLE IF NOT EXISTS [a-z_]+\\.${t}\\s+ON CLUSTER`);
    const stmt = statements.find((st) => head.test(st));
    if (!stmt || !/ENGINE = Distributed\(/.test(stmt)) p.push(`schema-cluster.sql: ${t} is not a Distributed table`);
  }
  return p;
}

// Namespaced objects live in one namespace; the Kustomization lists every
// manifest file exactly once.
export function checkLayout(docs, files) {
  const p = [];
  const kust = docs.find((d) => d.obj.kind === "Kustomization");
  if (!kust) return ["no kustomization.yaml"];
  const listed = (kust.obj.resources || []).slice().sort();
  const want = files.filter((f) => f !== kust.file).sort();
  if (JSON.stringify(listed) !== JSON.stringify(want)) p.push(`kustomization resources ${listed} != files ${want}`);
  for (const d of docs) {
    const o = d.obj;
    if (["Namespace", "Kustomization"].includes(o.kind)) continue;
    if (o.metadata?.namespace !== kust.obj.namespace) p.push(`${d.file}: ${o.kind} ${o.metadata?.name} not in namespace ${kust.obj.namespace}`);
  }
  return p;
}

export async function check(docs, { schemaSql, files } = {}) {
  const sql = schemaSql ?? fs.readFileSync(path.join(repo, "conf", "schema-cluster.sql"), "utf8");
  const fileList = files ?? yamlFiles().map((f) => path.relative(k8sDir, f));
  const problems = [];
  for (const d of docs) {
    if (d.obj.kind === "Kustomization") continue;
    problems.push(...(await schemaProblems(d)), ...unknownFields(d));
  }
  problems.push(...checkLayout(docs, fileList), ...checkApache(docs), ...checkClickHouse(docs, sql));
  return problems;
}
