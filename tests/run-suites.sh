#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0.
#
# make test's runner: `make SUITE` for every suite named, each even when an
# earlier one failed, then one line per suite with its result and duration,
# the total time, and a closing "suites: N passed, N failed" line. Exits 1
# when any suite failed.
#
#   bash tests/run-suites.sh SUITE...
set -u
MAKE=${MAKE:-make}
declare -a lines=()
passed=0 failed=0 names=""
start=$SECONDS
clock() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
for t in "$@"; do
    echo "==== make $t"
    t0=$SECONDS
    if $MAKE --no-print-directory "$t"; then
        result=passed passed=$((passed + 1))
    else
        result=FAILED failed=$((failed + 1)) names="$names $t"
    fi
    lines+=("$(printf '  %-14s %-7s %8s' "$t" "$result" "$(clock $((SECONDS - t0)))")")
done
echo "==== summary"
[ ${#lines[@]} -eq 0 ] || printf '%s\n' "${lines[@]}"
printf '  %-14s %-7s %8s\n' total "" "$(clock $((SECONDS - start)))"
[ $failed -eq 0 ] || echo "==== FAILED:$names"
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
