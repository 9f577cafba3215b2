# mod_imchallenge: build, install, run, test, benchmark.
#
#   make            build mod_imchallenge/.libs/mod_imchallenge.so with apxs
#   make install    install it into Apache (and Debian's mods-available)
#   make run        a private ClickHouse + httpd on http://127.0.0.1:8080/
#   make test       unit and integration tests (installs what is missing)
#   make bench      the benchmark suite

APXS    ?= apxs
CC      ?= gcc
PYTHON  ?= /usr/bin/python3
WARN    := -Wall -Wextra -Werror
MOD     := mod_imchallenge
BUILD   := build

SOURCES := mod_imchallenge.c imc_config.c imc_cors.c imc_units.c imc_http.c \
           imc_event.c imc_filter.c imc_filter_eval.c imc_rcache.c imc_scache.c \
           imc_spool_writer.c imc_spool_reader.c imc_spool_file.c \
           imc_clickhouse.c imc_schema.c imc_ingest.c imc_deliver.c imc_deliver_policy.c \
           imc_report.c imc_report_client.c imc_health.c imc_home.c imc_metrics.c \
           imc_access.c imc_ratelimit.c imc_tenant.c imc_slots.c imc_zones.c \
           imc_zone.c imc_bucket.c imc_syntax.c imc_spool_dir.c imc_rparams.c \
           imc_report_buckets.c imc_report_parts.c
SRCS    := $(addprefix $(MOD)/,$(SOURCES))
HDRS    := $(wildcard $(MOD)/imc_*.h)
GEN     := $(MOD)/home_html.h $(MOD)/schema_sql.h
MODULE  := $(MOD)/.libs/mod_imchallenge.so
LIBS    := $(shell pkg-config --libs jansson libcurl 2>/dev/null || echo -ljansson -lcurl)

APR_CFLAGS := $(shell pkg-config --cflags apr-1 2>/dev/null)
APR_LIBS   := $(shell pkg-config --libs apr-1 2>/dev/null)
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null)
UNIT_CFLAGS  := $(WARN) -g -std=gnu11 -pthread -I$(MOD) $(APR_CFLAGS) $(CHECK_CFLAGS)
UNIT_TESTS   := units config cors event filter rcache scache spool access ratelimit \
                clickhouse zone zones bucket syntax deliver_policy rparams
UNIT_BINS    := $(addprefix $(BUILD)/test_,$(UNIT_TESTS))
# The one main() of the unit tests; each test file defines its suite.
CHECK_MAIN   := tests/unit/check_main.c tests/unit/check_main.h

.PHONY: all install uninstall clean run test deps unit integration bench \
        fuzz fuzz-short format check-format

all: $(MODULE)

# Text files embedded in the module as C string literals.
$(MOD)/home_html.h: $(MOD)/home.html
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< > $@
$(MOD)/schema_sql.h: conf/schema.sql
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< > $@

# apxs is verbose: its output is shown only when the build fails.
$(MODULE): $(SRCS) $(HDRS) $(GEN)
	@echo "apxs -c $(MOD)/mod_imchallenge.la"
	@cd $(MOD) && $(APXS) -c -o mod_imchallenge.la \
	    $(addprefix -Wc$(comma),$(WARN) -std=gnu11) \
	    $(SOURCES) $(LIBS) > .apxs.log 2>&1 || { cat .apxs.log; exit 1; }

comma := ,

# Where `make install` puts things; DESTDIR stages a package, and
# APACHE_CONFDIR / LIBEXECDIR point at another Apache (the .load file then
# names the module where it was installed).
DESTDIR        ?=
APACHE_CONFDIR ?= /etc/apache2
LIBEXECDIR     ?= $(shell $(APXS) -q LIBEXECDIR)
MODS_AVAILABLE := $(DESTDIR)$(APACHE_CONFDIR)/mods-available

install: $(MODULE)
	mkdir -p $(DESTDIR)$(LIBEXECDIR)
	$(APXS) -i -S LIBEXECDIR=$(DESTDIR)$(LIBEXECDIR) -n imchallenge $(MODULE)
	@if [ -n "$(DESTDIR)" ] || [ -d $(MODS_AVAILABLE) ]; then \
	    mkdir -p $(MODS_AVAILABLE) && \
	    sed 's|/usr/lib/apache2/modules/|$(LIBEXECDIR)/|' \
	        conf/imchallenge.load > $(MODS_AVAILABLE)/imchallenge.load && \
	    install -m 644 conf/imchallenge.conf $(MODS_AVAILABLE)/ && \
	    chmod 644 $(MODS_AVAILABLE)/imchallenge.load && \
	    echo "installed: a2enmod imchallenge && apache2ctl graceful"; \
	fi

uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -e $(APACHE_CONFDIR)/mods-enabled/imchallenge.load ] && \
	    command -v a2dismod >/dev/null; then \
	    APACHE_CONFDIR=$(APACHE_CONFDIR) a2dismod -q -f imchallenge; \
	fi
	rm -f $(DESTDIR)$(LIBEXECDIR)/mod_imchallenge.so
	rm -f $(DESTDIR)$(APACHE_CONFDIR)/mods-enabled/imchallenge.load \
	      $(DESTDIR)$(APACHE_CONFDIR)/mods-enabled/imchallenge.conf \
	      $(MODS_AVAILABLE)/imchallenge.load $(MODS_AVAILABLE)/imchallenge.conf

clean:
	rm -rf $(BUILD) $(GEN) $(MOD)/.libs $(MOD)/*.o $(MOD)/*.lo \
	       $(MOD)/*.slo $(MOD)/*.la $(MOD)/.apxs.log

# What each command needs, by the groups of tests/install-deps.sh.
DEPS_GROUPS ?= build test

deps:
	bash tests/install-deps.sh $(DEPS_GROUPS)

run: deps all
	$(PYTHON) tests/stack.py run --port 8080 --workdir var --module $(MODULE)

# ---- tests --------------------------------------------------------------

$(BUILD):
	mkdir -p $@

$(BUILD)/test_units: tests/unit/test_units.c $(CHECK_MAIN) $(MOD)/imc_units.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_config: tests/unit/test_config.c $(CHECK_MAIN) $(MOD)/imc_config.c \
                      $(MOD)/imc_cors.c $(MOD)/imc_units.c $(MOD)/imc_access.c \
                      $(MOD)/imc_event.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) -I$(shell $(APXS) -q INCLUDEDIR) \
	    $(shell pkg-config --cflags apr-util-1) $(filter %.c,$^) $(APR_LIBS) \
	    $(shell pkg-config --libs apr-util-1) -ljansson $(CHECK_LIBS) -o $@
$(BUILD)/test_cors: tests/unit/test_cors.c $(CHECK_MAIN) $(MOD)/imc_cors.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_event: tests/unit/test_event.c $(CHECK_MAIN) $(MOD)/imc_event.c \
                     $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) -ljansson $(CHECK_LIBS) -o $@
$(BUILD)/test_filter: tests/unit/test_filter.c $(CHECK_MAIN) $(MOD)/imc_filter.c \
                      $(MOD)/imc_filter_eval.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_rcache: tests/unit/test_rcache.c $(CHECK_MAIN) $(MOD)/imc_rcache.c \
                      $(MOD)/imc_scache.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_scache: tests/unit/test_scache.c $(CHECK_MAIN) $(MOD)/imc_scache.c \
                      $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_access: tests/unit/test_access.c $(CHECK_MAIN) $(MOD)/imc_access.c \
                      $(MOD)/imc_event.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) -ljansson $(CHECK_LIBS) -o $@
$(BUILD)/test_ratelimit: tests/unit/test_ratelimit.c $(CHECK_MAIN) $(MOD)/imc_ratelimit.c \
                         $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_clickhouse: tests/unit/test_clickhouse.c $(CHECK_MAIN) $(MOD)/imc_clickhouse.c \
                          $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_spool: tests/unit/test_spool.c $(CHECK_MAIN) $(MOD)/imc_spool_writer.c \
                     $(MOD)/imc_spool_reader.c $(MOD)/imc_spool_file.c \
                     $(MOD)/imc_spool_dir.c \
                     $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_zone: tests/unit/test_zone.c $(CHECK_MAIN) $(MOD)/imc_zone.c \
                    $(MOD)/imc_bucket.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_zones: tests/unit/test_zones.c $(CHECK_MAIN) $(MOD)/imc_zones.c \
                     $(MOD)/imc_zone.c $(MOD)/imc_clickhouse.c $(MOD)/imc_syntax.c \
                     $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_bucket: tests/unit/test_bucket.c $(CHECK_MAIN) $(MOD)/imc_bucket.c \
                      $(MOD)/imc_zone.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_syntax: tests/unit/test_syntax.c $(CHECK_MAIN) $(MOD)/imc_syntax.c \
                      $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@

$(BUILD)/test_deliver_policy: tests/unit/test_deliver_policy.c $(CHECK_MAIN) \
                              $(MOD)/imc_deliver_policy.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@
$(BUILD)/test_rparams: tests/unit/test_rparams.c $(CHECK_MAIN) $(MOD)/imc_rparams.c \
                       $(MOD)/imc_bucket.c $(MOD)/imc_zone.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) $(CHECK_LIBS) -o $@

# imc_filter_compile and imc_filter_match side by side, for
# tests/integration/test_filter_eval.py (which asks ClickHouse the same).
$(BUILD)/filter_eval: tests/unit/filter_eval.c $(MOD)/imc_filter.c \
                      $(MOD)/imc_filter_eval.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(CC) $(UNIT_CFLAGS) $(filter %.c,$^) $(APR_LIBS) -o $@

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

integration: $(MODULE) $(BUILD)/filter_eval
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# Every suite runs even when an earlier one fails; a summary with each
# suite's result and duration ends the run (tests/run-suites.sh).
# TEST_SUITES=... runs a subset.
TEST_SUITES ?= unit integration test-browser fuzz-short unit-valgrind \
               test-asan test-k8s test-docker test-compat

fuzz-short:
	$(MAKE) fuzz FUZZ_SECONDS=20

test: DEPS_GROUPS = build test cluster browser docker k8s
test: deps
	@$(MAKE) all
	@MAKE="$(MAKE)" bash tests/run-suites.sh $(TEST_SUITES)

# ---- fuzzing (libFuzzer, ASan + UBSan) -----------------------------------

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := event filter spool access zone syntax rparams
FUZZ_CC      := clang
FUZZ_CFLAGS  := -g -O1 -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all $(WARN) -I$(MOD) $(APR_CFLAGS)

$(BUILD)/fuzz_event: tests/fuzz/fuzz_event.c $(MOD)/imc_event.c $(MOD)/imc_syntax.c \
                     $(HDRS) | $(BUILD)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(filter %.c,$^) $(APR_LIBS) -ljansson -o $@
$(BUILD)/fuzz_filter: tests/fuzz/fuzz_filter.c tests/fuzz/fuzz_common.h $(MOD)/imc_filter.c \
                      $(MOD)/imc_filter_eval.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(filter %.c,$^) $(APR_LIBS) -o $@
$(BUILD)/fuzz_access: tests/fuzz/fuzz_access.c tests/fuzz/fuzz_common.h $(MOD)/imc_access.c \
                      $(MOD)/imc_event.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(filter %.c,$^) $(APR_LIBS) -ljansson -o $@
$(BUILD)/fuzz_spool: tests/fuzz/fuzz_spool.c $(MOD)/imc_spool_writer.c \
                     $(MOD)/imc_spool_reader.c $(MOD)/imc_spool_file.c $(HDRS) | $(BUILD)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(filter %.c,$^) $(APR_LIBS) -o $@
$(BUILD)/fuzz_zone: tests/fuzz/fuzz_zone.c tests/fuzz/fuzz_common.h $(MOD)/imc_zone.c \
                    $(MOD)/imc_bucket.c $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(filter %.c,$^) $(APR_LIBS) -o $@
$(BUILD)/fuzz_syntax: tests/fuzz/fuzz_syntax.c tests/fuzz/fuzz_common.h \
                      $(MOD)/imc_syntax.c $(HDRS) | $(BUILD)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(filter %.c,$^) $(APR_LIBS) -o $@
$(BUILD)/fuzz_rparams: tests/fuzz/fuzz_rparams.c tests/fuzz/fuzz_common.h \
                       $(MOD)/imc_rparams.c $(MOD)/imc_bucket.c $(MOD)/imc_zone.c $(MOD)/imc_syntax.c \
                       $(HDRS) | $(BUILD)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(filter %.c,$^) $(APR_LIBS) -o $@

# Each target runs FUZZ_SECONDS from its checked-in seeds; new inputs go to
# build/, crashes to tests/fuzz/artifacts/ (to become regression tests).
fuzz: $(addprefix $(BUILD)/fuzz_,$(FUZZ_TARGETS))
	@set -e; mkdir -p tests/fuzz/artifacts; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(BUILD)/corpus-$$t; \
	    echo "== fuzz_$$t ($(FUZZ_SECONDS) s)"; \
	    $(BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=4200 \
	        -print_final_stats=1 -artifact_prefix=tests/fuzz/artifacts/ \
	        $(BUILD)/corpus-$$t tests/fuzz/corpus/$$t \
	        > $(BUILD)/fuzz_$$t.log 2>&1 || \
	        { tail -40 $(BUILD)/fuzz_$$t.log; exit 1; }; \
	    grep -E '^stat::number_of_executed_units' $(BUILD)/fuzz_$$t.log; \
	done

# Targets of their own: shipping (test-docker, test-k8s), sanitizers
# (test-asan, unit-valgrind), benchmarks (bench).
-include mk/*.mk

format:
	clang-format -i $(MOD)/*.c $(MOD)/imc_*.h tests/unit/*.c tests/fuzz/*.c

check-format:
	clang-format --dry-run --Werror $(MOD)/*.c $(MOD)/imc_*.h \
	    tests/unit/*.c tests/fuzz/*.c
