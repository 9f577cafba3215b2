// Licensed under the Apache License, Version 2.0.
//
// make test-k8s: the manifests of kubernetes/ are valid Kubernetes objects
// and keep the README's promises; each check is shown to catch a broken
// copy, so that a pass means something.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";

import { check, load, repo } from "./manifests.mjs";

const docs = load();
const sql = fs.readFileSync(path.join(repo, "conf", "schema-cluster.sql"), "utf8");

const copy = () => structuredClone(docs);
const obj = (ds, kind, name) => ds.find((d) => d.obj.kind === kind && (!name || d.obj.metadata?.name === name)).obj;
const httpd = (ds) => obj(ds, "StatefulSet", "imchallenge").spec.template.spec.containers[0];
const env = (c, name) => c.env.find((e) => e.name === name);

async function problemsAfter(mutate, options = {}) {
  const ds = copy();
  mutate(ds);
  return check(ds, options);
}

async function assertCaught(mutate, pattern, options) {
  const problems = await problemsAfter(mutate, options);
  assert.ok(problems.some((p) => pattern.test(p)), `expected ${pattern}, got:\n${problems.join("\n")}`);
}

test("every manifest is a valid object and every promise is kept", async () => {
  const kinds = docs.map((d) => d.obj.kind).sort();
  for (const k of ["ConfigMap", "HorizontalPodAutoscaler", "Job", "Namespace", "PodDisruptionBudget", "Service", "StatefulSet"]) {
    assert.ok(kinds.includes(k), `no ${k}`);
  }
  assert.ok(docs.length >= 18, `only ${docs.length} documents`);
  assert.deepEqual(await check(docs), []);
});

test("schema validation catches a wrong type", async () => {
  await assertCaught((ds) => { httpd(ds).ports[0].containerPort = "8080"; }, /containerPort must be integer/);
  await assertCaught((ds) => { obj(ds, "HorizontalPodAutoscaler").spec.minReplicas = "2"; }, /minReplicas must be integer/);
});

test("a misspelt field is caught", async () => {
  await assertCaught((ds) => {
    const c = httpd(ds);
    c.readinesProbe = c.readinessProbe;
    delete c.readinessProbe;
  }, /unknown field spec\.template\.spec\.containers\.0\.readinesProbe/);
});

test("Apache: replicas, probes, resources", async () => {
  await assertCaught((ds) => { obj(ds, "StatefulSet", "imchallenge").spec.replicas = 1; }, /replicas 1 < 2/);
  await assertCaught((ds) => { httpd(ds).readinessProbe.httpGet.path = "/healthz"; }, /readinessProbe on \/healthz, not \/readyz/);
  await assertCaught((ds) => { httpd(ds).livenessProbe.httpGet.path = "/readyz"; }, /livenessProbe on \/readyz/);
  await assertCaught((ds) => { httpd(ds).livenessProbe.httpGet.port = "web"; }, /livenessProbe port web/);
  await assertCaught((ds) => { delete httpd(ds).resources.limits.memory; }, /no resources\.limits\.memory/);
});

test("Apache: spool volume, drain time, Secret, ConfigMap", async () => {
  await assertCaught((ds) => {
    httpd(ds).volumeMounts = httpd(ds).volumeMounts.filter((m) => m.name !== "spool");
  }, /nothing mounted at \/var\/spool\/imchallenge/);
  await assertCaught((ds) => { obj(ds, "StatefulSet", "imchallenge").spec.template.spec.terminationGracePeriodSeconds = 30; }, /does not cover a 45 s drain/);
  await assertCaught((ds) => { env(httpd(ds), "IMC_GRACEFUL_SHUTDOWN_TIMEOUT").value = "90"; }, /does not cover a 90 s drain/);
  await assertCaught((ds) => { delete httpd(ds).lifecycle; }, /no preStop hook/);
  await assertCaught((ds) => { env(httpd(ds), "IMC_CLICKHOUSE_PASSWORD_FILE").value = "/etc/password"; }, /not in a Secret volume/);
  await assertCaught((ds) => { httpd(ds).env.push({ name: "IMC_CLICKHOUSE_PASSWORD", value: "x" }); }, /password in plain environment/);
  await assertCaught((ds) => { obj(ds, "ConfigMap", "imchallenge-apache").metadata.name = "other"; }, /ConfigMap imchallenge-apache is not defined/);
  await assertCaught((ds) => { env(httpd(ds), "IMC_CREATE_SCHEMA").value = "On"; }, /IMC_CREATE_SCHEMA must be Off/);
});

test("Service, HPA and PDB point at the Apache pods", async () => {
  await assertCaught((ds) => { obj(ds, "Service", "imchallenge").spec.selector = { app: "x" }; }, /does not select the pods/);
  await assertCaught((ds) => { obj(ds, "Service", "imchallenge").spec.ports[0].targetPort = 9999; }, /targetPort 9999/);
  await assertCaught((ds) => { obj(ds, "HorizontalPodAutoscaler").spec.scaleTargetRef.kind = "Deployment"; }, /HPA targets apps\/v1\/Deployment/);
  await assertCaught((ds) => { obj(ds, "HorizontalPodAutoscaler").spec.minReplicas = 1; }, /HPA minReplicas < 2/);
  await assertCaught((ds) => {
    obj(ds, "PodDisruptionBudget", "imchallenge").spec.selector.matchLabels = { app: "x" };
  }, /no PodDisruptionBudget selects the Apache pods/);
});

test("ClickHouse: shards, replicas, Keeper, cluster name", async () => {
  await assertCaught((ds) => { obj(ds, "StatefulSet", "clickhouse-shard2").spec.replicas = 3; }, /remote_servers shards/);
  await assertCaught((ds) => { obj(ds, "StatefulSet", "clickhouse-shard1").spec.replicas = 1; }, /clickhouse-shard1: replicas 1 < 2/);
  await assertCaught((ds) => { obj(ds, "StatefulSet", "clickhouse-keeper").spec.replicas = 2; }, /not an odd number >= 3/);
  await assertCaught((ds) => {
    const cm = obj(ds, "ConfigMap", "clickhouse");
    cm.data["cluster.xml"] = cm.data["cluster.xml"].replace("clickhouse-keeper-2.", "clickhouse-keeper-9.");
  }, /<zookeeper> hosts/);
  await assertCaught((ds) => {
    env(obj(ds, "StatefulSet", "clickhouse-shard2").spec.template.spec.containers[0], "CLICKHOUSE_SHARD").value = "1";
  }, /CLICKHOUSE_SHARD is not 2/);
  await assertCaught(() => {}, /ON CLUSTER other, the servers define imchallenge/, { schemaSql: sql.replaceAll("ON CLUSTER imchallenge", "ON CLUSTER other") });
  await assertCaught(() => {}, /events is not a Distributed table/, { schemaSql: sql.replace("ENGINE = Distributed(imchallenge, imchallenge, events_local,", "ENGINE = MergeTree(") });
  await assertCaught((ds) => {
    const c = obj(ds, "StatefulSet", "clickhouse-shard1").spec.template.spec.containers[0];
    env(c, "CLICKHOUSE_IMC_PASSWORD").valueFrom.secretKeyRef.name = "nope";
  }, /unknown Secret nope/);
  await assertCaught((ds) => { obj(ds, "StatefulSet", "clickhouse-keeper").spec.template.spec.containers[0].image = "clickhouse/clickhouse-keeper:latest"; }, /is not pinned/);
});

test("the kustomization lists every manifest", async () => {
  await assertCaught((ds) => {
    const k = obj(ds, "Kustomization");
    k.resources = k.resources.filter((r) => r !== "imchallenge/pdb.yaml");
  }, /kustomization resources/);
  await assertCaught((ds) => { obj(ds, "Service", "imchallenge").metadata.namespace = "default"; }, /not in namespace imchallenge/);
});
