# Licensed under the Apache License, Version 2.0.
"""The dependency step itself, on a machine that has never seen it.

Each test starts a throw-away container of the debootstrap'd
debian:bookworm-slim base image with the repository's tracked files
copied in, puts a stand-in `node` and `npm` on PATH that apt knows
nothing of (as a machine whose Node.js did not come from Debian has), runs
a dependency step and reads what it changed:

- `make ship-deps-k8s` installs yamllint and leaves Node.js and npm alone
  (asking apt for Debian's npm beside another Node.js makes apt refuse the
  whole request on such a machine; in a container without that Node.js
  apt would silently install a second one);
- `tests/install-deps.sh all` brings every tool of every group into the
  slim image (whose missing manual-page directory once broke Java's
  post-install), then finds nothing missing, and the module builds and its
  unit tests pass there.
"""

import re
import subprocess
import uuid

import pytest

from conftest import PODMAN, REPO, ULIMITS, podman

STANDIN_NODE = "v20.99.0-standin"
STANDIN_NPM = "11.99.0-standin"

# The container's common start: the stand-ins, their checksums, apt's lists
# and make (which runs the Makefile's steps), and a writable copy of the
# repository.
PRELUDE = r"""
set -u
export DEBIAN_FRONTEND=noninteractive
for tool in node:%(node)s npm:%(npm)s; do
    printf '#!/bin/sh\necho %%s\n' "${tool#*:}" > /usr/local/bin/${tool%%%%:*}
    chmod 755 /usr/local/bin/${tool%%%%:*}
done
sha256sum /usr/local/bin/node /usr/local/bin/npm > /tmp/standin.sha
apt-get update -qq && apt-get install -y -qq --no-install-recommends make \
    > /dev/null || { echo "RESULT setup=failed"; exit 0; }
cp -a /src /tmp/repo && cd /tmp/repo
""" % {"node": STANDIN_NODE, "npm": STANDIN_NPM}

# What the step left: one RESULT line per fact.
REPORT = r"""
echo "RESULT step=$step"
for c in yamllint node npm; do echo "RESULT which_$c=$(command -v $c)"; done
echo "RESULT node_version=$(node --version)"
echo "RESULT npm_version=$(npm --version)"
for p in nodejs npm; do
    echo "RESULT dpkg_$p=$(dpkg-query -W -f='${Status}' $p 2>/dev/null)"
done
sha256sum -c --quiet /tmp/standin.sha >/dev/null 2>&1 &&
    echo "RESULT standins=unchanged" || echo "RESULT standins=changed"
"""


@pytest.fixture
def source(workbase):
    """The repository's tracked files as they are in the work tree."""
    dest = workbase / ("src-%s" % uuid.uuid4().hex[:8])
    dest.mkdir()
    files = subprocess.run(["git", "ls-files", "-z"], cwd=str(REPO),
                           check=True, stdout=subprocess.PIPE).stdout
    tar = subprocess.run(["tar", "--null", "-T", "-", "-cf", "-"],
                         input=files, cwd=str(REPO), check=True,
                         stdout=subprocess.PIPE).stdout
    subprocess.run(["tar", "-xf", "-", "-C", str(dest)], input=tar,
                   check=True)
    return dest


def run_in_base(base_image, source, script, timeout):
    """Runs script in a fresh container; its output and RESULT facts."""
    name = "imc-installer-%s" % uuid.uuid4().hex[:8]
    try:
        res = subprocess.run(
            PODMAN + ["run", "--rm", "--name", name, "--network", "host"]
            + ULIMITS + ["-v", "%s:/src:ro" % source, base_image,
                         "bash", "-c", PRELUDE + script + REPORT],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
            timeout=timeout)
    finally:
        podman("rm", "-f", "-t", "0", name, check=False, timeout=60)
    facts = dict(re.findall(r"^RESULT (\w+)=(.*)$", res.stdout, re.M))
    assert facts.get("setup") != "failed", res.stdout[-3000:]
    return res.stdout, facts


def assert_node_untouched(out, facts):
    assert facts["node_version"] == STANDIN_NODE, out[-3000:]
    assert facts["npm_version"] == STANDIN_NPM, out[-3000:]
    assert facts["which_node"] == "/usr/local/bin/node", out[-3000:]
    assert facts["which_npm"] == "/usr/local/bin/npm", out[-3000:]
    assert facts["standins"] == "unchanged", out[-3000:]
    for p in ("nodejs", "npm"):
        assert "ok installed" not in facts["dpkg_" + p], (
            "apt installed Debian's %s beside the Node.js that was there:\n%s"
            % (p, out[-3000:]))


def test_k8s_step_installs_yamllint_and_keeps_the_machines_node(
        base_image, source):
    out, facts = run_in_base(base_image, source, r"""
make --no-print-directory ship-deps-k8s; step=$?
""", timeout=900)
    assert facts["step"] == "0", out[-3000:]
    assert facts["which_yamllint"] == "/usr/bin/yamllint", out[-3000:]
    assert_node_untouched(out, facts)
    assert re.search(r"node +present \(/usr/local/bin/node\)", out), out


def test_every_group_installs_into_a_slim_image_and_builds(base_image,
                                                           source):
    out, facts = run_in_base(base_image, source, r"""
bash tests/install-deps.sh all; step=$?
missing=$(IMC_DEPS_DRY_RUN=1 bash tests/install-deps.sh all | grep missing)
echo "RESULT missing_after=$missing"
make --no-print-directory all unit > /tmp/build.log 2>&1 &&
    echo "RESULT build=ok" || { tail -40 /tmp/build.log; echo "RESULT build=failed"; }
""", timeout=2400)
    assert facts["step"] == "0", out[-5000:]
    assert facts["missing_after"] == "", out[-5000:]
    assert facts["build"] == "ok", out[-5000:]
    assert_node_untouched(out, facts)
