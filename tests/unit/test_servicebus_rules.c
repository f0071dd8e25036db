/*
 * test_servicebus_rules.c — lib/servicebus: the rules a service call's
 * request and a node's allow list are held to, on both sides of the
 * tunnel.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_servicebus.h"

#include <stdlib.h>
#include <string.h>

static void test_servicebus_targets_are_host_and_port(void **state)
{
    (void)state;
    char why[256];
    assert_int_equal(ke_servicebus_check_target("127.0.0.1:8080", why, sizeof(why)), 0);
    assert_int_equal(ke_servicebus_check_target("metrics.local:9100", why, sizeof(why)), 0);
    assert_int_equal(ke_servicebus_check_target("[::1]:80", why, sizeof(why)), 0);
    assert_int_equal(ke_servicebus_check_target("127.0.0.1", why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "target \"127.0.0.1\": must be host:port (e.g. 127.0.0.1:8080)");
    assert_int_equal(ke_servicebus_check_target("h:0", why, sizeof(why)), KE_EINVAL);
    assert_int_equal(ke_servicebus_check_target("h:65536", why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "target \"h:65536\": the port must be 1..65535");
    assert_int_equal(ke_servicebus_check_target("h:80x", why, sizeof(why)), KE_EINVAL);
    assert_int_equal(ke_servicebus_check_target(":80", why, sizeof(why)), KE_EINVAL);
    assert_int_equal(ke_servicebus_check_target("a/b:80", why, sizeof(why)), KE_EINVAL);
    assert_int_equal(ke_servicebus_check_target("user@h:80", why, sizeof(why)), KE_EINVAL);
    assert_int_equal(ke_servicebus_check_target("[zz]:80", why, sizeof(why)), KE_EINVAL);
    assert_int_equal(ke_servicebus_check_target("", why, sizeof(why)), KE_EINVAL);
    assert_int_equal(ke_servicebus_check_target(NULL, why, sizeof(why)), KE_EINVAL);
}

static void test_servicebus_allow_list_matches_exact_entries(void **state)
{
    (void)state;
    char why[256];
    const char *allow = "127.0.0.1:8080, localhost:9000 ,[::1]:80";
    assert_int_equal(ke_servicebus_check_allow(allow, why, sizeof(why)), 0);
    assert_int_equal(ke_servicebus_check_allow("", why, sizeof(why)), 0);
    assert_int_equal(ke_servicebus_check_allow(NULL, why, sizeof(why)), 0);
    assert_true(ke_servicebus_allowed(allow, "127.0.0.1:8080"));
    assert_true(ke_servicebus_allowed(allow, "localhost:9000"));
    assert_true(ke_servicebus_allowed(allow, "[::1]:80"));
    assert_false(ke_servicebus_allowed(allow, "127.0.0.1:808"));
    assert_false(ke_servicebus_allowed(allow, "127.0.0.1:80800"));
    assert_false(ke_servicebus_allowed(allow, "localhost:8080")); /* names are not resolved */
    assert_false(ke_servicebus_allowed(allow, ""));
    assert_false(ke_servicebus_allowed("", "127.0.0.1:8080")); /* empty: nothing */
    assert_false(ke_servicebus_allowed(NULL, "127.0.0.1:8080"));
    assert_int_equal(ke_servicebus_check_allow("127.0.0.1:80,,h:1", why, sizeof(why)),
                     KE_EINVAL);
    assert_string_equal(why, "entry 2 is empty");
    assert_int_equal(ke_servicebus_check_allow("127.0.0.1:80, h", why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "entry 2: target \"h\": must be host:port (e.g. 127.0.0.1:8080)");
}

static Ke__V1__ServiceRequest good(void)
{
    Ke__V1__ServiceRequest r = KE__V1__SERVICE_REQUEST__INIT;
    r.target = "127.0.0.1:8080";
    r.method = "GET";
    r.path = "/a/b?c=d%20e";
    r.timeout_ms = 1000;
    return r;
}

static void test_servicebus_request_fields_are_checked(void **state)
{
    (void)state;
    char why[256];
    Ke__V1__ServiceRequest r = good();
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), 0);
    r.method = "get";
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "method: 1 to 16 capital letters (GET, POST, ...)");
    r = good();
    r.method = "";
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    const char *paths[] = {"", "a", "/a b", "/a#frag", "/\xc3\xa9", "/a\r\n"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        r = good();
        r.path = (char *)paths[i];
        assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
        assert_int_equal(strncmp(why, "path: ", 6), 0);
    }
    r = good();
    r.timeout_ms = 0;
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "timeout_ms: 1..300000");
    r.timeout_ms = KE_SERVICEBUS_TIMEOUT_MAX_MS + 1;
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    r = good();
    r.target = "nowhere";
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
}

static void test_servicebus_request_bounds_and_headers(void **state)
{
    (void)state;
    char why[256];
    Ke__V1__ServiceRequest r = good();
    uint8_t *body = calloc(1, KE_SERVICEBUS_BODY_MAX + 1);
    assert_non_null(body);
    r.body.data = body;
    r.body.len = KE_SERVICEBUS_BODY_MAX;
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), 0);
    r.body.len++;
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "body: at most 1048576 bytes (1048577 given)");
    free(body);

    Ke__V1__HTTPHeader hs[KE_SERVICEBUS_HEADERS_MAX + 1], *hp[KE_SERVICEBUS_HEADERS_MAX + 1];
    for (size_t i = 0; i <= KE_SERVICEBUS_HEADERS_MAX; i++) {
        ke__v1__httpheader__init(&hs[i]);
        hs[i].name = "X-A";
        hs[i].value = "v\tw";
        hp[i] = &hs[i];
    }
    r = good();
    r.headers = hp;
    r.n_headers = KE_SERVICEBUS_HEADERS_MAX;
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), 0);
    r.n_headers++;
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "headers: at most 64 (65 given)");
    r.n_headers = 1;
    hs[0].value = "a\r\nInjected: 1";
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "headers[0].value: control characters are not allowed");
    hs[0].value = "";
    hs[0].name = "Bad Name";
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "headers[0].name: \"Bad Name\" is not an HTTP token");
    hs[0].name = "";
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "headers[0].name: required");
    hs[0].name = "content-length";
    hs[0].value = "3";
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "headers[0]: content-length is set from the body, not by the caller");
    hs[0].name = "Transfer-Encoding";
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    char *long_value = malloc(KE_SERVICEBUS_HEADER_MAX + 1);
    assert_non_null(long_value);
    memset(long_value, 'v', KE_SERVICEBUS_HEADER_MAX);
    long_value[KE_SERVICEBUS_HEADER_MAX] = '\0';
    hs[0].name = "X";
    hs[0].value = long_value;
    assert_int_equal(ke_servicebus_check_request(&r, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "headers[0]: name and value at most 8192 bytes");
    free(long_value);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_servicebus_targets_are_host_and_port),
        cmocka_unit_test(test_servicebus_allow_list_matches_exact_entries),
        cmocka_unit_test(test_servicebus_request_fields_are_checked),
        cmocka_unit_test(test_servicebus_request_bounds_and_headers),
    };
    return cmocka_run_group_tests_name("servicebus_rules", tests, NULL, NULL);
}
