/*
 * test_map.c — ke_map: put/get/replace/delete, growth past many keys,
 * iteration sees every entry once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_map.h"

#include <stdio.h>
#include <stdlib.h>

static void test_map_put_get_replace_delete(void **state)
{
    (void)state;
    ke_map *m = ke_map_new();
    int a = 1, b = 2;
    void *old = &a;
    assert_int_equal(ke_map_put(m, "k", &a, &old), 0);
    assert_null(old);
    assert_ptr_equal(ke_map_get(m, "k"), &a);
    assert_int_equal(ke_map_put(m, "k", &b, &old), 0);
    assert_ptr_equal(old, &a);
    assert_int_equal(ke_map_len(m), 1);
    assert_ptr_equal(ke_map_del(m, "k"), &b);
    assert_null(ke_map_get(m, "k"));
    assert_null(ke_map_del(m, "k"));
    assert_int_equal(ke_map_len(m), 0);
    ke_map_free(m);
    ke_map_free(NULL);
}

static int count_fn(const char *key, void *value, void *arg)
{
    (void)key;
    *(long *)arg += (long)(intptr_t)value;
    return 0;
}

static void test_map_grows_and_iterates_every_entry(void **state)
{
    (void)state;
    ke_map *m = ke_map_new();
    char key[32];
    for (long i = 1; i <= 20000; i++) {
        snprintf(key, sizeof(key), "node/n%ld/default/Pod/p", i);
        assert_int_equal(ke_map_put(m, key, (void *)(intptr_t)i, NULL), 0);
    }
    assert_int_equal(ke_map_len(m), 20000);
    for (long i = 1; i <= 20000; i += 997) {
        snprintf(key, sizeof(key), "node/n%ld/default/Pod/p", i);
        assert_int_equal((intptr_t)ke_map_get(m, key), i);
    }
    long sum = 0;
    ke_map_each(m, count_fn, &sum);
    assert_int_equal(sum, 20000L * 20001L / 2);
    ke_map_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_put_get_replace_delete),
        cmocka_unit_test(test_map_grows_and_iterates_every_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
