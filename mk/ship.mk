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

.PHONY: test-docker test-k8s ship-deps-docker ship-deps-k8s

ship-deps-docker:
	@bash tests/install-deps.sh docker

ship-deps-k8s:
	@bash tests/install-deps.sh k8s

test-docker: ship-deps-docker
	$(SHIP_PYTHON) -m pytest -q -p no:cacheprovider tests/container

test-k8s: ship-deps-k8s
	bash tests/k8s/run.sh
