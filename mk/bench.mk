# The benchmark suite.  Included from the top-level Makefile.
#
#   make bench           build the module and the no-op baseline module
#                        (tests/bench/mod_noop.c -> build/bench/), then run
#                        tests/bench/run.py: single-event POSTs against the
#                        no-op handler, NDJSON batches, end-to-end delay,
#                        httpd memory, spool bytes per event and the report
#                        benchmark (tests/bench/report_bench.py); prints a
#                        table and writes tests/bench/results/bench-*.json
#   make bench-profile   callgrind instruction counts per request (module
#                        vs no-op) and a perf CPU profile under wrk, into
#                        tests/bench/results/profile-*/
#   make bench-compare OLD=a.json NEW=b.json
#                        the figures of two runs side by side
#   make bench-upload    peak RSS of concurrent 63 MiB uploads in one
#                        process (tests/bench/upload_bench.py)
#
# Options go through the environment: BENCH_QUICK=1 (a short run),
# BENCH_DURATION, BENCH_ROUNDS, BENCH_BATCH_SECONDS, BENCH_MEM_EVENTS,
# BENCH_DRAIN_TIMEOUT, BENCH_ONLY=single,batch,memory,spool,report,
# BENCH_REPORT_SIZES, BENCH_REPORT_REPEAT, BENCH_REPORT_CLUSTER=0 (no
# cluster scope), BENCH_REPORT_COLD_SIZE (the report's cold measurement,
# 30000000 events; 0: none), BENCH_KEEP=1; for the profile
# PROFILE_REQUESTS and PROFILE_SECONDS.  See tests/bench/run.py.

BENCH_DIR    := $(BUILD)/bench
BENCH_NOOP   := $(BENCH_DIR)/.libs/mod_noop.so
BENCH_PYTHON ?= $(PYTHON)

.PHONY: bench bench-noop bench-profile bench-compare bench-upload

$(BENCH_NOOP): tests/bench/mod_noop.c
	@mkdir -p $(BENCH_DIR)
	cp $< $(BENCH_DIR)/mod_noop.c
	@echo "apxs -c $(BENCH_DIR)/mod_noop.la"
	@cd $(BENCH_DIR) && $(APXS) -c -o mod_noop.la \
	    $(addprefix -Wc$(comma),$(WARN) -std=gnu11) mod_noop.c \
	    > apxs.log 2>&1 || { cat apxs.log; exit 1; }

bench-noop: $(BENCH_NOOP)

bench: DEPS_GROUPS = build test bench
bench: deps
	$(MAKE) all bench-noop
	$(BENCH_PYTHON) tests/bench/run.py

bench-profile: DEPS_GROUPS = build test bench
bench-profile: deps
	$(MAKE) all bench-noop
	$(BENCH_PYTHON) tests/bench/profile_bench.py

bench-compare:
	@test -n "$(OLD)" -a -n "$(NEW)" || \
	    { echo "usage: make bench-compare OLD=a.json NEW=b.json"; exit 2; }
	$(BENCH_PYTHON) tests/bench/compare.py $(OLD) $(NEW)

bench-upload: all
	$(BENCH_PYTHON) tests/bench/upload_bench.py
