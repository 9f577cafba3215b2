/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_zone: an IANA time zone from the system's zone database, as the
 * offsets it gives to instants. APR only, no httpd headers.
 *
 * A zone is read from its compiled file (TZif, RFC 8536, versions 1 to 4;
 * the 64-bit section of version 2 and later) and its POSIX TZ footer rule
 * (e.g. "CET-1CEST,M3.5.0,M10.5.0/3", names in <> or letters, offsets,
 * Mm.w.d, Jn and n dates, times from -167 to 167 hours), which governs the
 * instants after the last transition of the file. The rule is expanded into
 * transitions up to the end of IMC_ZONE_RULE_YEARS, so that every lookup is
 * a binary search in one sorted table: O(log n) in the transitions.
 * Transitions that keep the offset (a change of name or of the DST flag
 * only) are dropped: a zone here is its offsets, nothing else.
 *
 * Times are seconds since 1970-01-01T00:00:00Z (UTC seconds, no leap
 * seconds) and local times are the same count on the zone's wall clock
 * ("local seconds": 1970-01-01T00:00:00 local is 0). Instants outside
 * [IMC_ZONE_TIME_MIN, IMC_ZONE_TIME_MAX] are taken at the nearest bound.
 *
 * Local time runs backwards in a fold (a clock set back) and jumps in a gap
 * (a clock set forward). imc_zone_local_to_utc(L) answers the first
 * instant whose local time is >= L: in a gap, the instant the clock jumps
 * (its local time is the first one after the gap); in a fold, the first of
 * the instants that show L. So a day, a week or a month starts at the first
 * instant that shows its first local second or a later one, and every
 * instant belongs to exactly one such unit.
 */

#ifndef IMC_ZONE_H
#define IMC_ZONE_H

#include <apr_pools.h>

/* The zone database; zone names are paths below it. */
#define IMC_ZONE_DIR "/usr/share/zoneinfo/"

/* The longest zone name accepted (the longest IANA name is 30 bytes). */
#define IMC_ZONE_MAX_NAME 64

/* Offsets beyond +-26 hours make a zone file invalid. */
#define IMC_ZONE_MAX_OFFSET (26 * 3600)

/* The instants a zone answers for: about +-34800 years around 1970. */
#define IMC_ZONE_TIME_MAX ((apr_int64_t)1 << 40)
#define IMC_ZONE_TIME_MIN (-IMC_ZONE_TIME_MAX)

/* The footer rule is expanded into transitions up to the end of this year;
 * later instants keep the offset of the last transition. */
#define IMC_ZONE_RULE_YEARS 2200

/* Zone files larger than this are refused (the largest is about 4 KB). */
#define IMC_ZONE_MAX_FILE (256 * 1024)

typedef struct imc_zone imc_zone;

/*
 * Whether name may be looked up in the zone database: 1 to
 * IMC_ZONE_MAX_NAME bytes of letters, digits and "/_+-", not starting with
 * "/", without "..", not below right/ (zones counting leap seconds). The
 * report quotes the name into SQL: these are the only characters it sees.
 */
int imc_zone_valid_name(const char *name);

/*
 * Load the zone name from IMC_ZONE_DIR into *zone, allocated from p.
 * "UTC" needs no file. APR_EINVAL when the name is not valid or the file
 * is no zone (no "TZif" magic, malformed, leap seconds, offsets out of
 * range); the error of opening or reading the file otherwise (APR_ENOENT
 * when there is none). Done once per zone name: the caller keeps it.
 */
apr_status_t imc_zone_load(imc_zone **zone, apr_pool_t *p, const char *name);

/*
 * The zone name from the TZif data[0..len) (imc_zone_load without the
 * file; the fuzz and unit tests feed it). APR_EINVAL when data is no zone.
 */
apr_status_t imc_zone_parse(imc_zone **zone, apr_pool_t *p, const char *name,
                            const unsigned char *data, apr_size_t len);

/* The name the zone was loaded under. */
const char *imc_zone_name(const imc_zone *zone);

/* The offset of local time from UTC at instant t, in seconds east. */
int imc_zone_offset(const imc_zone *zone, apr_int64_t t);

/*
 * The offset at t, and in *since / *until the instants between which it
 * holds: since <= t < until (since is IMC_ZONE_TIME_MIN for the first
 * offset, until is IMC_ZONE_TIME_MAX + 1 after the last transition). The
 * offset before since and the one from until differ from it.
 */
int imc_zone_span(const imc_zone *zone, apr_int64_t t, apr_int64_t *since,
                  apr_int64_t *until);

/* The latest local time shown at or before t: t + offset, except in a fold
 * where it is the local time shown just before the clock went back. */
apr_int64_t imc_zone_local_reached(const imc_zone *zone, apr_int64_t t);

/* The first instant whose local time is >= local (see above). */
apr_int64_t imc_zone_local_to_utc(const imc_zone *zone, apr_int64_t local);

/* The largest forward jump of the zone's clock, in seconds (0 if none): a
 * zone whose clock never jumps a whole day has no day without instants. */
apr_int64_t imc_zone_max_jump(const imc_zone *zone);

#endif /* IMC_ZONE_H */
