# Licensed under the Apache License, Version 2.0.
"""Fixtures for the container tests: the image, a ClickHouse, containers.

    base_image  debian:bookworm-slim, pulled or made by base-image.sh
    image       docker/Dockerfile built with podman (tag $IMC_IMAGE, default
                localhost/mod_imchallenge:test); the base image is made by
                base-image.sh when it cannot be pulled
    clickhouse  a private ClickHouse on 127.0.0.1 (tests/stack_fixtures.py)
    containers  a factory: containers.run(env={...}, spool=path) starts the
                image with --network host; every container started here is
                removed when the test ends

podman runs with `--runtime runc --cgroup-manager cgroupfs` and lowered
ulimits; containers use the host network so that they reach the test's
ClickHouse on 127.0.0.1 and listen on 127.0.0.1 only (IMC_LISTEN_ADDRESS).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import stack  # noqa: E402
import stack_fixtures  # noqa: E402
from stack_fixtures import clickhouse  # noqa: E402,F401 (a fixture)
from stack_fixtures import pytest_configure  # noqa: E402,F401 (a hook)

REPO = HERE.parent.parent
IMAGE = os.environ.get("IMC_IMAGE", "localhost/mod_imchallenge:test")
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
ULIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096"]
# The capabilities the Kubernetes manifest grants (kubernetes/); the image
# must work with these and no more.
CAPABILITIES = ["CHOWN", "FOWNER", "KILL", "SETGID", "SETUID"]


def podman(*args, check=True, timeout=600, **kw):
    """Run podman with the test's global options; return CompletedProcess."""
    res = subprocess.run(PODMAN + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, errors="replace", timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError("podman %s failed (%d):\n%s%s"
                             % (" ".join(args[:3]), res.returncode,
                                res.stdout[-3000:], res.stderr[-3000:]))
    return res


workbase = stack_fixtures.workdir_fixture("imc-container-")


@pytest.fixture(scope="session")
def base_image():
    """docker/Dockerfile's base, debian:bookworm-slim (base-image.sh)."""
    subprocess.run(["bash", str(HERE / "base-image.sh")], check=True,
                   timeout=900)
    return os.environ.get("IMC_BASE_IMAGE",
                          "docker.io/library/debian:bookworm-slim")


@pytest.fixture(scope="session")
def image(base_image):
    """The image, built from the repository root like `docker build`."""
    if os.environ.get("IMC_IMAGE_PREBUILT"):
        podman("image", "exists", IMAGE)
        return IMAGE
    started = time.monotonic()
    res = podman("build", "--format", "docker", "--network", "host",
                 *ULIMITS, "-f", "docker/Dockerfile", "-t", IMAGE, ".",
                 cwd=str(REPO), check=False, timeout=1200)
    if res.returncode != 0:
        pytest.fail("podman build failed:\n%s\n%s"
                    % (res.stdout[-6000:], res.stderr[-3000:]),
                    pytrace=False)
    sys.stderr.write("\nimage %s built in %.0f s\n"
                     % (IMAGE, time.monotonic() - started))
    return IMAGE


class Container:
    """One container of the image, on the host network."""

    def __init__(self, cid, name, port):
        self.id = cid
        self.name = name
        self.port = port
        self.url = "http://127.0.0.1:%d/" % port
        self.http = stack.http_session()

    def get(self, path, **kw):
        kw.setdefault("timeout", 30)
        return self.http.get(self.url + path.lstrip("/"), **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", 30)
        return self.http.post(self.url + path.lstrip("/"), **kw)

    def inspect(self, fmt):
        return podman("inspect", "--format", fmt, self.id).stdout.strip()

    def running(self):
        return self.inspect("{{.State.Running}}") == "true"

    def exit_code(self):
        return int(self.inspect("{{.State.ExitCode}}"))

    def log_lines(self):
        """(stream, text) pairs from the k8s-file log: stdout or stderr."""
        path = self.inspect("{{.HostConfig.LogConfig.Path}}")
        lines = []
        with open(path, errors="replace") as f:
            for raw in f:
                parts = raw.rstrip("\n").split(" ", 3)
                if len(parts) == 4:
                    lines.append((parts[1], parts[3]))
        return lines

    def log_text(self):
        return "\n".join(text for _, text in self.log_lines())

    def wait_healthy(self, timeout=60):
        def answers():
            if not self.running():
                raise AssertionError("container %s exited (%d):\n%s"
                                     % (self.name, self.exit_code(),
                                        self.log_text()))
            try:
                return self.get("healthz", timeout=2).status_code == 200
            except Exception:
                return False
        stack.wait_until(answers, timeout, interval=0.2,
                         what="GET /healthz of %s" % self.name)
        return self

    def wait_exit(self, timeout=60):
        podman("wait", self.id, timeout=timeout + 5)
        return self.exit_code()


class Containers:
    """Starts containers and removes them (only them) at the end."""

    def __init__(self, image, workbase):
        self.image = image
        self.workbase = workbase
        self.started = []
        self._count = 0

    def run(self, env=None, spool=None, volumes=(), caps=CAPABILITIES,
            read_only=True, wait=True, args=()):
        """Start the image; by default as the Kubernetes manifest runs it:
        only CAPABILITIES, and a read-only root with tmpfs on /run and /tmp
        (readOnlyRootFilesystem with emptyDir volumes)."""
        self._count += 1
        name = "imc-test-%d-%d" % (os.getpid(), self._count)
        port = stack.free_port()
        environ = {"IMC_PORT": str(port), "IMC_LISTEN_ADDRESS": "127.0.0.1"}
        environ.update(env or {})
        cmd = ["run", "-d", "--name", name, "--network", "host",
               "--log-driver", "k8s-file"] + ULIMITS
        if read_only:
            cmd.append("--read-only")
        if caps is not None:
            cmd += ["--cap-drop", "ALL"]
            for cap in caps:
                cmd += ["--cap-add", cap]
        for k, v in environ.items():
            cmd += ["-e", "%s=%s" % (k, v)]
        if spool is not None:
            cmd += ["-v", "%s:/var/spool/imchallenge" % spool]
        for host, inside in volumes:
            cmd += ["-v", "%s:%s:ro" % (host, inside)]
        cmd.append(self.image)
        cmd += list(args)
        cid = podman(*cmd).stdout.strip().splitlines()[-1]
        c = Container(cid, name, port)
        self.started.append(c)
        if wait:
            c.wait_healthy()
        return c

    def remove_all(self):
        for c in reversed(self.started):
            podman("rm", "-f", "-t", "0", c.id, check=False, timeout=120)
        self.started = []


@pytest.fixture
def containers(image, workbase):
    f = Containers(image, workbase)
    yield f
    f.remove_all()
