/* Licensed under the Apache License, Version 2.0. */

/*
 * The directives' setters, defaults and the server/virtual-host merge,
 * driven through the module's own command table as httpd would.
 */

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "check_main.h"
#include "imc_config.h"

/* The two httpd functions imc_config.c calls, and the module record whose
 * index locates the configuration (a one-slot module_config here). */
module AP_MODULE_DECLARE_DATA imchallenge_module;

char *ap_server_root_relative(apr_pool_t *p, const char *fname)
{
    return fname[0] == '/' ? apr_pstrdup(p, fname)
                           : apr_pstrcat(p, "/srv/root/", fname, NULL);
}

int ap_is_matchexp(const char *str)
{
    return strpbrk(str, "*?[") != NULL;
}

static apr_pool_t *pool;

static server_rec *new_server(void)
{
    server_rec *s = apr_pcalloc(pool, sizeof(*s));
    void **slots = apr_pcalloc(pool, sizeof(void *));

    slots[0] = imc_config_create(pool, s);
    s->module_config = (ap_conf_vector_t *)slots;
    return s;
}

/* Runs one directive as httpd would; returns its error or NULL. */
static const char *directive(server_rec *s, const char *name, const char *arg)
{
    const command_rec *cmd;
    cmd_parms parms;

    for (cmd = imc_config_cmds; cmd->name; ++cmd) {
        if (!strcasecmp(cmd->name, name)) {
            break;
        }
    }
    ck_assert_ptr_nonnull(cmd->name);
    memset(&parms, 0, sizeof(parms));
    parms.pool = pool;
    parms.temp_pool = pool;
    parms.server = s;
    parms.cmd = cmd;
    if (cmd->args_how == FLAG) {
        return cmd->AP_FLAG(&parms, NULL, !strcasecmp(arg, "on"));
    }
    return cmd->AP_TAKE1(&parms, NULL, arg);
}

static const imc_config *conf(server_rec *s)
{
    return ((void **)s->module_config)[0];
}

static void setup(void)
{
    apr_pool_create(&pool, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

START_TEST(defaults)
{
    const imc_config *c = conf(new_server());
    const apr_array_header_t *urls = imc_config_clickhouse(c);

    ck_assert_int_eq(urls->nelts, 1);
    ck_assert_str_eq(APR_ARRAY_IDX(urls, 0, const char *),
                     "http://127.0.0.1:8123/");
    ck_assert_str_eq(imc_config_user(c), "default");
    ck_assert_ptr_null(imc_config_password(c));
    ck_assert_str_eq(imc_config_database(c), "imchallenge");
    ck_assert_str_eq(imc_config_spool_dir(c), "/var/spool/imchallenge");
    ck_assert_int_eq(imc_config_spool_limit(c), 1024 * 1024 * 1024);
    ck_assert_int_eq(imc_config_spool_sync(c), 0);
    ck_assert_int_eq(imc_config_batch_size(c), 10000);
    ck_assert_int_eq(imc_config_batch_delay(c), apr_time_from_sec(1));
    ck_assert_int_eq(imc_config_timeout(c), apr_time_from_sec(10));
    ck_assert_int_eq(imc_config_max_event_size(c), 16384);
    ck_assert_int_eq(imc_config_max_batch_events(c), 10000);
    ck_assert_int_eq(imc_config_create_schema(c), 1);
    ck_assert_ptr_null(imc_config_cors(c));
    ck_assert_int_eq(imc_config_max_reports(c), 8);
    ck_assert_int_eq(imc_config_max_report_rows(c), 100000);
    ck_assert_int_eq(imc_config_solve_window(c), apr_time_from_sec(600));
}
END_TEST

START_TEST(values)
{
    server_rec *s = new_server();
    const imc_config *c = conf(s);

    ck_assert_ptr_null(directive(s, "IMChallengeSpoolLimit", "256M"));
    ck_assert_ptr_null(directive(s, "IMChallengeBatchDelay", "250ms"));
    ck_assert_ptr_null(directive(s, "IMChallengeTimeout", "2m"));
    ck_assert_ptr_null(directive(s, "IMChallengeMaxEventSize", "1k"));
    ck_assert_ptr_null(directive(s, "IMChallengeBatchSize", "500"));
    ck_assert_ptr_null(directive(s, "IMChallengeSpoolSync", "On"));
    ck_assert_ptr_null(directive(s, "IMChallengeCreateSchema", "Off"));
    ck_assert_ptr_null(directive(s, "IMChallengeSpoolDir", "spool"));
    ck_assert_ptr_null(directive(s, "IMChallengeMaxReports", "3"));
    ck_assert_ptr_null(directive(s, "IMChallengeMaxReportRows", "25"));
    ck_assert_int_eq(imc_config_spool_limit(c), 256 * 1024 * 1024);
    ck_assert_int_eq(imc_config_batch_delay(c), 250000);
    ck_assert_int_eq(imc_config_timeout(c), apr_time_from_sec(120));
    ck_assert_int_eq(imc_config_max_event_size(c), 1024);
    ck_assert_int_eq(imc_config_batch_size(c), 500);
    ck_assert_int_eq(imc_config_spool_sync(c), 1);
    ck_assert_int_eq(imc_config_create_schema(c), 0);
    ck_assert_str_eq(imc_config_spool_dir(c), "/srv/root/spool");
    ck_assert_int_eq(imc_config_max_reports(c), 3);
    ck_assert_int_eq(imc_config_max_report_rows(c), 25);
    ck_assert_ptr_null(directive(s, "IMChallengeSolveWindow", "30s"));
    ck_assert_int_eq(imc_config_solve_window(c), apr_time_from_sec(30));
}
END_TEST

/* IMChallengeSolveWindow: every DURATION form, 0 to a day. */
START_TEST(solve_window)
{
    static const struct {
        const char *arg;
        apr_interval_time_t want;
    } cases[] = {{"0", 0},
                 {"1ms", 1000},
                 {"1500ms", 1500000},
                 {"45", apr_time_from_sec(45)},
                 {"30s", apr_time_from_sec(30)},
                 {"10m", apr_time_from_sec(600)},
                 {"1440m", apr_time_from_sec(86400)}};
    server_rec *s = new_server();
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        ck_assert_ptr_null(
            directive(s, "IMChallengeSolveWindow", cases[i].arg));
        ck_assert_int_eq(imc_config_solve_window(conf(s)), cases[i].want);
    }
}
END_TEST

/* IMChallengeReportCache: 0 (none) or a SIZE from 64k to 16G, main
 * server only. */
START_TEST(report_cache)
{
    server_rec *s = new_server(), *v = new_server();
    const char *err;

    ck_assert_uint_eq(imc_config_report_cache(conf(s)),
                      (apr_size_t)64 * 1024 * 1024);
    ck_assert_ptr_null(directive(s, "IMChallengeReportCache", "0"));
    ck_assert_uint_eq(imc_config_report_cache(conf(s)), 0);
    ck_assert_ptr_null(directive(s, "IMChallengeReportCache", "64k"));
    ck_assert_uint_eq(imc_config_report_cache(conf(s)), 65536);
    ck_assert_ptr_null(directive(s, "IMChallengeReportCache", "1G"));
    ck_assert_uint_eq(imc_config_report_cache(conf(s)),
                      (apr_size_t)1024 * 1024 * 1024);
    ck_assert_ptr_nonnull(directive(s, "IMChallengeReportCache", "63k"));
    ck_assert_ptr_nonnull(directive(s, "IMChallengeReportCache", "17G"));
    v->is_virtual = 1;
    err = directive(v, "IMChallengeReportCache", "1M");
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "IMChallengeReportCache"));
    ck_assert_ptr_nonnull(strstr(err, "<VirtualHost>"));
}
END_TEST

/* Every bad value is refused with a message that names the directive. */
START_TEST(bad_values)
{
    static const char *cases[][2] = {
        {"IMChallengeSpoolLimit", "lots"},
        {"IMChallengeSpoolLimit", "1k"}, /* below the minimum */
        {"IMChallengeBatchDelay", "1h"},
        {"IMChallengeBatchDelay", "0"},
        {"IMChallengeTimeout", "-5s"},
        {"IMChallengeMaxEventSize", "1T"},
        {"IMChallengeBatchSize", "0"},
        {"IMChallengeBatchSize", "1000001"},
        {"IMChallengeMaxBatchEvents", "many"},
        {"IMChallengeMaxReports", "0"},
        {"IMChallengeMaxReports", "4097"},
        {"IMChallengeMaxReports", "8x"},
        {"IMChallengeMaxReportRows", "0"},
        {"IMChallengeMaxReportRows", "100000001"},
        {"IMChallengeMaxReportRows", "1e5"},
        {"IMChallengeSolveWindow", "1441m"},
        {"IMChallengeSolveWindow", "-1s"},
        {"IMChallengeSolveWindow", "10 m"},
        {"IMChallengeSolveWindow", "1h"},
        {"IMChallengeSolveWindow", ""},
        {"IMChallengeReportCache", "lots"},
        {"IMChallengeReportCache", "-1"},
        {"IMChallengeClickHouse", "ftp://127.0.0.1/"},
        {"IMChallengeClickHouse", "http://user:pw@127.0.0.1:8123/"},
        {"IMChallengeClickHouse", "127.0.0.1:8123"},
        {"IMChallengeDatabase", "imc; DROP TABLE x"},
        {"IMChallengeDatabase", "9lives"},
        {"IMChallengeClickHouseUser", "a:b"},
        {"IMChallengeClickHousePasswordFile", "/nonexistent/pw"},
        {"IMChallengeCORS", "https://www.example.com/"},
        {"IMChallengeCORS", "www.example.com"},
        {"IMChallengeCORS", "null"},
        {"IMChallengeCORS", "https://*.example.com"}};
    server_rec *s = new_server();
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        const char *err = directive(s, cases[i][0], cases[i][1]);

        ck_assert_msg(err != NULL, "%s %s accepted", cases[i][0], cases[i][1]);
        ck_assert_msg(strstr(err, cases[i][0]) != NULL,
                      "message '%s' does not name the directive", err);
    }
    /* Nothing bad was stored. */
    ck_assert_int_eq(imc_config_batch_size(conf(s)), 10000);
    ck_assert_str_eq(imc_config_database(conf(s)), "imchallenge");
    ck_assert_ptr_null(imc_config_cors(conf(s)));
    ck_assert_int_eq(imc_config_solve_window(conf(s)), apr_time_from_sec(600));
}
END_TEST

/* IMChallengeCORS keeps origins in canonical form, '*' as it is; a
 * virtual host's own list replaces the inherited one. */
START_TEST(cors)
{
    server_rec *base = new_server(), *vhost = new_server();
    const apr_array_header_t *o;
    const imc_config *m;

    ck_assert_ptr_null(
        directive(base, "IMChallengeCORS", "HTTPS://WWW.Example.com:443"));
    ck_assert_ptr_null(directive(base, "IMChallengeCORS", "*"));
    o = imc_config_cors(conf(base));
    ck_assert_int_eq(o->nelts, 2);
    ck_assert_str_eq(APR_ARRAY_IDX(o, 0, const char *),
                     "https://www.example.com");
    ck_assert_str_eq(APR_ARRAY_IDX(o, 1, const char *), "*");
    m = imc_config_merge(pool, (void *)conf(base), (void *)conf(vhost));
    ck_assert_ptr_eq(imc_config_cors(m), o);
    ck_assert_ptr_null(
        directive(vhost, "IMChallengeCORS", "http://127.0.0.1:8081"));
    m = imc_config_merge(pool, (void *)conf(base), (void *)conf(vhost));
    ck_assert_int_eq(imc_config_cors(m)->nelts, 1);
    ck_assert_str_eq(APR_ARRAY_IDX(imc_config_cors(m), 0, const char *),
                     "http://127.0.0.1:8081");
}
END_TEST

/* The password is read at configuration time, its line end dropped, and
 * it never appears in an error message. */
START_TEST(password_file)
{
    char path[] = "/tmp/imc-pw-XXXXXX";
    int fd = mkstemp(path);
    server_rec *s = new_server();

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "s3cret\n", 7), 7);
    close(fd);
    ck_assert_ptr_null(directive(s, "IMChallengeClickHousePasswordFile", path));
    ck_assert_str_eq(imc_config_password(conf(s)), "s3cret");
    unlink(path);
}
END_TEST

/* A refused ClickHouse URL that may hold a secret is never echoed,
 * whichever way the secret is written; one that cannot is. */
START_TEST(url_secret_never_echoed)
{
    static const char *cases[] = {"http://user:s3cret@127.0.0.1:8123/",
                                  "http:/user:s3cret@127.0.0.1/",
                                  "http:user:s3cret@127.0.0.1/",
                                  "http://127.0.0.1:8123/?password=s3cret",
                                  "http://127.0.0.1/#s3cret",
                                  "s3cret@127.0.0.1"};
    server_rec *s = new_server();
    const char *err;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        err = directive(s, "IMChallengeClickHouse", cases[i]);
        ck_assert_msg(err != NULL, "%s accepted", cases[i]);
        ck_assert_msg(strstr(err, "s3cret") == NULL, "'%s' echoes it", err);
        ck_assert_msg(strstr(err, "IMChallengeClickHouse") != NULL, "%s", err);
    }
    err = directive(s, "IMChallengeClickHouse", "ftp://10.1.2.3/");
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "ftp://10.1.2.3/"));
}
END_TEST

/* A virtual host inherits what it does not set and overrides what it
 * sets; URLs accumulate in order for fail-over. */
START_TEST(merge)
{
    server_rec *base = new_server(), *vhost = new_server();
    const imc_config *m;
    const apr_array_header_t *urls;

    ck_assert_ptr_null(
        directive(base, "IMChallengeClickHouse", "http://10.0.0.1:8123/"));
    ck_assert_ptr_null(directive(base, "IMChallengeBatchSize", "100"));
    ck_assert_ptr_null(directive(base, "IMChallengeSpoolSync", "On"));
    ck_assert_ptr_null(directive(base, "IMChallengeDatabase", "main"));
    ck_assert_ptr_null(directive(base, "IMChallengeSolveWindow", "30s"));
    ck_assert_ptr_null(directive(vhost, "IMChallengeDatabase", "other"));
    ck_assert_ptr_null(directive(vhost, "IMChallengeSpoolSync", "Off"));
    ck_assert_ptr_null(
        directive(vhost, "IMChallengeClickHouse", "http://10.0.0.2:8123/"));
    ck_assert_ptr_null(
        directive(vhost, "IMChallengeClickHouse", "https://10.0.0.3:8443/"));
    m = imc_config_merge(pool, (void *)conf(base), (void *)conf(vhost));
    ck_assert_str_eq(imc_config_database(m), "other");
    ck_assert_int_eq(imc_config_batch_size(m), 100);
    ck_assert_int_eq(imc_config_spool_sync(m), 0);
    ck_assert_int_eq(imc_config_timeout(m), apr_time_from_sec(10));
    ck_assert_int_eq(imc_config_solve_window(m), apr_time_from_sec(30));
    ck_assert_int_eq(imc_config_solve_window(conf(vhost)),
                     apr_time_from_sec(600));
    urls = imc_config_clickhouse(m);
    ck_assert_int_eq(urls->nelts, 2);
    ck_assert_str_eq(APR_ARRAY_IDX(urls, 1, const char *),
                     "https://10.0.0.3:8443/");
    /* The base is untouched by the merge. */
    ck_assert_str_eq(imc_config_database(conf(base)), "main");
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("directives");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, values);
    tcase_add_test(tc, bad_values);
    tcase_add_test(tc, report_cache);
    tcase_add_test(tc, solve_window);
    tcase_add_test(tc, password_file);
    tcase_add_test(tc, url_secret_never_echoed);
    tcase_add_test(tc, merge);
    tcase_add_test(tc, cors);
    suite_add_tcase(s, tc);
    return s;
}
