# Shipping: the container image and the Kubernetes manifests.
# Included from the top-level Makefile.
#
#   make test-docker   build docker/Dockerfile with podman and test the image
#                      against a real ClickHouse (tests/container/)
#   make test-k8s      yamllint + offline schema validation of kubernetes/
#                      (tests/k8s/)
#
# Both install what they need (podman, runc, debootstrap, yamllint, npm
# packages into tests/k8s/node_modules) when it is missing.

SHIP_PYTHON ?= /usr/bin/python3
SHIP_APT    := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
               --no-install-recommends

.PHONY: test-docker test-k8s ship-deps-docker ship-deps-k8s

ship-deps-docker:
	@command -v podman >/dev/null && command -v runc >/dev/null && \
	    command -v debootstrap >/dev/null && \
	    $(SHIP_PYTHON) -c "import yaml" 2>/dev/null || { \
	    apt-get update -qq && \
	    $(SHIP_APT) podman runc debootstrap uidmap slirp4netns \
	        fuse-overlayfs python3-yaml >/dev/null; }

ship-deps-k8s:
	@command -v yamllint >/dev/null && command -v npm >/dev/null || { \
	    apt-get update -qq && $(SHIP_APT) yamllint nodejs npm >/dev/null; }

test-docker: ship-deps-docker
	$(SHIP_PYTHON) -m pytest -q -p no:cacheprovider tests/container

test-k8s: ship-deps-k8s
	bash tests/k8s/run.sh
