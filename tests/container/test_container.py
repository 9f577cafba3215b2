# Licensed under the Apache License, Version 2.0.
"""The container image: built from docker/Dockerfile, run with podman
against a real ClickHouse, events in, report out, health, logs, graceful
stop and the spool volume."""

import json
import re
import time
import uuid
from pathlib import Path

import pytest

import stack
from conftest import CAPABILITIES, podman

REPO = Path(__file__).resolve().parents[2]
MAX_IMAGE_BYTES = 250 * 1000 * 1000
DAY = "2026-11-28"
BAD_LOG = re.compile(r"\[(?:[\w.-]*:)?(warn|error|crit|alert|emerg)\]|"
                     r"exit signal|Segmentation fault")


def events_for(site, served, solved, day=DAY):
    """Events of `served` procedures of which the first `solved` are solved,
    plus a resent copy of the first serve (counted once by the report)."""
    ids = [str(uuid.uuid4()) for _ in range(served)]
    out = []
    for i, cid in enumerate(ids):
        out.append({"time": "%sT10:%02d:00Z" % (day, i % 60), "type": "serve",
                    "correlation_id": cid, "site_id": site, "n": i})
    for i, cid in enumerate(ids[:solved]):
        out.append({"time": "%sT11:%02d:30+01:00" % (day, i % 60),
                    "type": "solve", "correlation_id": cid.upper(),
                    "site_id": site})
    out.append(dict(out[0]))
    return out


def report_for(c, site, **params):
    r = c.get("api/report/site_id='%s'" % site, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def password_volume(clickhouse):
    return [(str(clickhouse.password_file),
             "/run/secrets/clickhouse-password")]


def imc_env(clickhouse, **extra):
    env = {"IMC_CLICKHOUSE_URL": clickhouse.url,
           "IMC_CLICKHOUSE_USER": clickhouse.imc_user,
           "IMC_CLICKHOUSE_PASSWORD_FILE": "/run/secrets/clickhouse-password"}
    env.update(extra)
    return env


def spool_dir(workbase, name):
    d = workbase / name
    d.mkdir()
    return d


def test_image_size_and_metadata(image):
    size = int(podman("image", "inspect", "--format", "{{.Size}}",
                      image).stdout)
    print("image size: %d bytes (%.1f MB)" % (size, size / 1e6))
    assert 0 < size < MAX_IMAGE_BYTES
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert config["StopSignal"] in ("SIGWINCH", "28")
    assert "/var/spool/imchallenge" in config["Volumes"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert "IMC_PORT=8080" in config["Env"]
    assert config["Entrypoint"] == ["/usr/local/bin/imc-entrypoint"]
    health = info.get("Healthcheck") or config.get("Healthcheck")
    assert health and "imc-healthcheck" in " ".join(health["Test"])


def test_runtime_stage_is_slim_and_complete(image):
    script = (
        "set -e; for t in gcc cc apxs make; do "
        "if command -v $t >/dev/null; then echo build tool $t; exit 1; fi; "
        "done; ldd /usr/lib/apache2/modules/mod_imchallenge.so; "
        "test -L /etc/apache2/mods-enabled/imchallenge.load; "
        "test -L /etc/apache2/mods-enabled/imchallenge.conf; "
        "stat -c '%U %a' /var/spool/imchallenge")
    res = podman("run", "--rm", "--network", "none", "--entrypoint", "bash",
                 "--ulimit", "nofile=16384:16384",
                 "--ulimit", "nproc=4096:4096", image, "-c", script,
                 check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "not found" not in res.stdout
    for lib in ("libjansson.so", "libcurl.so"):
        assert lib in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "www-data 750"


def test_events_report_health_and_logs(containers, clickhouse, workbase):
    spool = spool_dir(workbase, "spool-main")
    c = containers.run(env=imc_env(clickhouse), spool=spool,
                       volumes=password_volume(clickhouse))
    assert c.get("healthz").status_code == 200
    ready = stack.wait_until(
        lambda: c.get("readyz").status_code == 200, 30, interval=0.2,
        what="GET /readyz")
    assert ready
    assert podman("healthcheck", "run", c.id, check=False).returncode == 0

    site_a, site_b = str(uuid.uuid4()), str(uuid.uuid4())
    r = c.post("api/event", params={"wait": "1"},
               json=events_for(site_a, served=12, solved=9))
    assert r.status_code == 201, r.text
    assert r.json() == {"status": "stored", "accepted": 22}
    ndjson = "\n".join(json.dumps(e) for e in events_for(site_b, 4, 1))
    r = c.post("api/event", data=ndjson + "\n",
               headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "accepted", "accepted": 6}

    rep = report_for(c, site_a)
    assert rep["rows"] == [{"day": DAY, "site_id": site_a, "served": 12,
                            "solved": 9, "solve_rate": 0.75}]

    def site_b_reported():
        return report_for(c, site_b)["rows"]
    rows = stack.wait_until(site_b_reported, 30, interval=0.3,
                            what="site B in the report")
    assert rows == [{"day": DAY, "site_id": site_b, "served": 4, "solved": 1,
                     "solve_rate": 0.25}]
    csv = c.get("api/report/site_id='%s'" % site_b,
                params={"format": "csv"}).text.splitlines()
    assert csv == ["day,site_id,served,solved,solve_rate",
                   "%s,%s,4,1,0.2500" % (DAY, site_b)]

    # The rows are in ClickHouse, written with the imc user's password.
    assert clickhouse.scalar(
        "SELECT uniqExact(correlation_id, type) FROM imchallenge.events "
        "WHERE site_id = toUUID('%s')" % site_a) == "21"
    r = c.post("api/event", json={"type": "serve"})
    assert r.status_code == 400
    assert c.get("api/status").json()["clickhouse_reachable"] is True
    assert c.get("metrics").status_code == 200  # 127.0.0.1 is local
    assert "imchallenge" in c.get("").text.lower()

    # Apache's access log goes to stdout, its error log to stderr.
    def logged():
        lines = c.log_lines()
        return [s for s, t in lines if '"POST /api/event?wait=1' in t]
    streams = stack.wait_until(logged, 10, what="the access log line")
    assert streams == ["stdout"]
    lines = c.log_lines()
    assert any(s == "stderr" and "resuming normal operations" in t
               for s, t in lines)
    bad = [t for _, t in lines if BAD_LOG.search(t)]
    assert not bad, bad
    # The root file system is read-only, as on Kubernetes.
    assert podman("exec", c.id, "touch", "/etc/apache2/x",
                  check=False).returncode != 0
    # Children run as www-data, which owns the spool.
    assert spool.stat().st_uid == 33
    ps = podman("top", c.id, "user", "comm").stdout.split("\n")[1:]
    users = {line.split()[0] for line in ps if "apache2" in line}
    assert users == {"root", "www-data"}


def queued(c):
    return c.get("api/status").json()["queued_events"]


def test_graceful_stop_drains_the_spool(containers, clickhouse, workbase):
    # A long batch delay and one child process that never exits (its
    # settings come through imchallenge.d/, as a ConfigMap's would): only
    # the graceful stop sends these events.
    extra = workbase / "one-child.conf"
    extra.write_text("<IfModule mpm_event_module>\n"
                     "StartServers 1\nServerLimit 1\nThreadsPerChild 16\n"
                     "MaxRequestWorkers 16\nMinSpareThreads 1\n"
                     "MaxSpareThreads 16\nMaxConnectionsPerChild 0\n"
                     "</IfModule>\n")
    spool = spool_dir(workbase, "spool-drain")
    c = containers.run(env=imc_env(clickhouse, IMC_BATCH_DELAY="5m"),
                       spool=spool, volumes=password_volume(clickhouse) + [
                           (str(extra), "/etc/apache2/imchallenge.d/a.conf")])
    children = podman("top", c.id, "pid", "user").stdout
    assert children.count("www-data") == 1, children
    site = str(uuid.uuid4())
    r = c.post("api/event", json=events_for(site, served=30, solved=20))
    assert r.status_code == 202, r.text
    stack.wait_until(lambda: queued(c) == 51, 10, what="51 queued events")
    assert report_for(c, site)["rows"] == []
    started = time.monotonic()
    podman("stop", "-t", "40", c.id, timeout=60)
    took = time.monotonic() - started
    assert c.exit_code() == 0
    assert took < 25, "graceful stop took %.1f s" % took
    assert clickhouse.scalar(
        "SELECT uniqExact(correlation_id, type) FROM imchallenge.events "
        "WHERE site_id = toUUID('%s')" % site) == "50"
    text = c.log_text()
    assert "caught SIGWINCH" in text, text


def test_spool_volume_survives_a_killed_container(containers, clickhouse,
                                                  workbase):
    # ClickHouse unreachable: events wait in the spool volume; the
    # container is killed; a new one on the same volume delivers them.
    spool = spool_dir(workbase, "spool-kill")
    dead_port = stack.free_port()
    first = containers.run(
        env=imc_env(clickhouse,
                    IMC_CLICKHOUSE_URL="http://127.0.0.1:%d/" % dead_port,
                    IMC_TIMEOUT="2s"),
        spool=spool, volumes=password_volume(clickhouse))
    site = str(uuid.uuid4())
    r = first.post("api/event", json=events_for(site, served=7, solved=3))
    assert r.status_code == 202, r.text
    assert first.get("readyz").status_code == 503
    stack.wait_until(lambda: queued(first) == 11, 10, what="11 queued events")
    podman("kill", "-s", "KILL", first.id)
    first.wait_exit()
    assert any(p.is_file() and p.stat().st_size > 0
               for p in spool.rglob("*"))

    second = containers.run(env=imc_env(clickhouse), spool=spool,
                            volumes=password_volume(clickhouse))
    rows = stack.wait_until(lambda: report_for(second, site)["rows"], 30,
                            interval=0.3, what="the spooled events")
    assert rows == [{"day": DAY, "site_id": site, "served": 7, "solved": 3,
                     "solve_rate": 0.4286}]


@pytest.mark.parametrize("name,value", [
    ("IMC_PORT", "http"),
    ("IMC_CLICKHOUSE_URL", "http://127.0.0.1:8123/\nLoadModule x y"),
    ("IMC_CLICKHOUSE_USER", "imc\" evil"),
    ("IMC_CLICKHOUSE_PASSWORD_FILE", "/does/not/exist"),
    ("IMC_BATCH_DELAY", "soon"),
])
def test_bad_environment_stops_the_container(containers, name, value):
    c = containers.run(env={name: value}, wait=False)
    assert c.wait_exit(60) != 0
    text = c.log_text()
    assert name in text
    assert "resuming normal operations" not in text


def test_environment_becomes_apache_configuration(containers, clickhouse):
    c = containers.run(env=imc_env(clickhouse, IMC_DATABASE="imc_env_db",
                                   IMC_GRACEFUL_SHUTDOWN_TIMEOUT="7",
                                   IMC_BATCH_DELAY="250ms"),
                       volumes=password_volume(clickhouse))
    conf = podman("exec", c.id, "cat", "/run/imchallenge/env.conf").stdout
    assert "Listen 127.0.0.1:%d" % c.port in conf
    assert "IMChallengeDatabase imc_env_db" in conf
    assert "GracefulShutdownTimeout 7" in conf
    assert ('IMChallengeClickHousePasswordFile '
            '"/run/secrets/clickhouse-password"') in conf
    assert clickhouse.imc_password not in conf
    site = str(uuid.uuid4())
    r = c.post("api/event", params={"wait": "1"},
               json=events_for(site, served=2, solved=2))
    assert r.status_code == 201, r.text
    assert clickhouse.scalar(
        "SELECT count() FROM imc_env_db.events WHERE site_id = "
        "toUUID('%s')" % site) == "5"
    assert clickhouse.imc_password not in c.log_text()


def k8s_manifest(name):
    import yaml
    return list(yaml.safe_load_all((REPO / "kubernetes" / name).read_text()))


def test_runs_as_the_kubernetes_manifest_says(containers, clickhouse,
                                              workbase):
    """The StatefulSet's capabilities, environment and Apache ConfigMap
    work in the image."""
    sts = k8s_manifest("imchallenge/statefulset.yaml")[0]
    spec = sts["spec"]["template"]["spec"]
    httpd = spec["containers"][0]
    caps = httpd["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert sorted(caps["add"]) == sorted(CAPABILITIES)
    assert httpd["securityContext"]["readOnlyRootFilesystem"] is True
    cm = k8s_manifest("imchallenge/configmap.yaml")[0]
    confdir = workbase / "k8s-configmap"
    confdir.mkdir()
    for key, text in cm["data"].items():
        (confdir / key).write_text(text)
    env = {e["name"]: e["value"] for e in httpd["env"] if "value" in e}
    assert env["IMC_PORT"] == str(httpd["ports"][0]["containerPort"])
    env.pop("IMC_PORT")
    env.update(IMC_CLICKHOUSE_URL=clickhouse.url,
               IMC_CLICKHOUSE_USER=clickhouse.imc_user)
    mounts = password_volume(clickhouse)
    mounts = [(mounts[0][0], env["IMC_CLICKHOUSE_PASSWORD_FILE"]),
              (str(confdir), "/etc/apache2/imchallenge.d")]
    check = containers.run(env=env, volumes=mounts, wait=False,
                           args=["apache2ctl", "-t"])
    assert check.wait_exit(60) == 0, check.log_text()
    assert "Syntax OK" in check.log_text()
    c = containers.run(env=env, volumes=mounts)
    assert c.get("healthz").status_code == 200
    conf = podman("exec", c.id, "cat", "/run/imchallenge/env.conf").stdout
    assert "GracefulShutdownTimeout %s" % env[
        "IMC_GRACEFUL_SHUTDOWN_TIMEOUT"] in conf
    assert spec["terminationGracePeriodSeconds"] > int(
        env["IMC_GRACEFUL_SHUTDOWN_TIMEOUT"])
    ps = podman("top", c.id, "user", "comm").stdout
    assert ps.count("www-data") == 2  # StartServers 2 from the ConfigMap
