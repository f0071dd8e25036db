/*
 * test_log.c — unit tests for lib/log's ke_log_esc, the escaping of
 * peer-chosen strings before they reach a log line: control characters,
 * non-ASCII bytes, quotes and backslashes come out as readable escapes,
 * printable text is untouched, and a string that does not fit is cut at an
 * escape boundary and marked, never in the middle of an escape. Also
 * checks that ke_log_write keeps one event on one line when a control
 * character reaches it unescaped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_log.h"
#include "ke_testproc.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_log_esc_leaves_printable_ascii_alone(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(ke_log_esc("edge-1 v1.2.3 (a/b:c)", buf, sizeof(buf)),
                        "edge-1 v1.2.3 (a/b:c)");
    assert_string_equal(ke_log_esc("", buf, sizeof(buf)), "");
    assert_string_equal(ke_log_esc(NULL, buf, sizeof(buf)), "");
}

static void test_log_esc_escapes_controls_quotes_and_high_bytes(void **state)
{
    (void)state;
    char buf[128];
    assert_string_equal(ke_log_esc("a\nb\rc\td", buf, sizeof(buf)), "a\\nb\\rc\\td");
    assert_string_equal(ke_log_esc("\x1b[31mred\x7f", buf, sizeof(buf)), "\\x1b[31mred\\x7f");
    assert_string_equal(ke_log_esc("say \"hi\" \\ there", buf, sizeof(buf)),
                        "say \\\"hi\\\" \\\\ there");
    assert_string_equal(ke_log_esc("caf\xc3\xa9\x01", buf, sizeof(buf)), "caf\\xc3\\xa9\\x01");
    /* the output never holds a byte outside printable ASCII */
    char all[256];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    char big[KE_LOG_ESC_SIZE(sizeof(all))];
    ke_log_esc(all, big, sizeof(big));
    for (const char *p = big; *p; p++)
        assert_true(*p >= 0x20 && *p <= 0x7e);
    assert_null(strstr(big, "...")); /* KE_LOG_ESC_SIZE holds it all */
}

static void test_log_esc_cuts_at_an_escape_boundary_and_marks_it(void **state)
{
    (void)state;
    char buf[10];
    /* "abcd\x1b" fits, but not with "..." after it: cut before the escape */
    assert_string_equal(ke_log_esc("abcd\x1b\x1b\x1b", buf, sizeof(buf)), "abcd...");
    char small[8];
    assert_string_equal(ke_log_esc("\x01\x02\x03", small, sizeof(small)), "\\x01...");
    assert_string_equal(ke_log_esc("abcdefghij", small, sizeof(small)), "abcd...");
    assert_string_equal(ke_log_esc("abcdefg", small, sizeof(small)), "abcdefg");
    char tiny[3];
    assert_string_equal(ke_log_esc("\n", tiny, sizeof(tiny)), "\\n");
    assert_string_equal(ke_log_esc("\x01", tiny, sizeof(tiny)), "");
    char one[1];
    assert_string_equal(ke_log_esc("abc", one, sizeof(one)), "");
    assert_string_equal(ke_log_esc("abc", NULL, 0), "");
}

static void test_log_write_keeps_one_event_on_one_line(void **state)
{
    (void)state;
    char dir[64], path[128], buf[512];
    assert_int_equal(ke_tp_tmpdir(dir), 0);
    snprintf(path, sizeof(path), "%s/log", dir);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    ke_log_warn("test", "unescaped=%s", "x\n2026-01-01T00:00:00.000Z ERROR forged\x1b[31m");
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    close(fd);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *nl = strchr(buf, '\n');
    assert_non_null(nl);
    assert_string_equal(nl + 1, ""); /* one line */
    assert_non_null(strstr(buf, "unescaped=x?2026-01-01T00:00:00.000Z ERROR forged?[31m"));
    ke_tp_sh("rm -rf '%s'", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_esc_leaves_printable_ascii_alone),
        cmocka_unit_test(test_log_esc_escapes_controls_quotes_and_high_bytes),
        cmocka_unit_test(test_log_esc_cuts_at_an_escape_boundary_and_marks_it),
        cmocka_unit_test(test_log_write_keeps_one_event_on_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
