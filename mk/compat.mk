# The compatibility suite.  Included from the top-level Makefile.
#
#   make test-compat   the module against a private ClickHouse 18.16 through
#                      a recording relay (a workload with known answers),
#                      then every statement it sent replayed on ClickHouse
#                      26.7's engine through the npm package chdb, answers
#                      compared (tests/compat/); ends with
#                      "compat: N passed, M failed"
#
# Node.js and npm come from the k8s group of tests/install-deps.sh (the
# machine's own are used when present); chdb is installed by npm ci into
# tests/compat/node_modules.  The capture is kept in build/compat/.

COMPAT_PYTHON ?= $(PYTHON)

.PHONY: test-compat

test-compat: $(MODULE)
	@bash tests/install-deps.sh test k8s >/dev/null
	PYTHON=$(COMPAT_PYTHON) bash tests/compat/run.sh
