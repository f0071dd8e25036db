/*
 * test_wire.c — the hand-encoded tunnel frame decodes with protobuf-c as
 * both a CloudFrame and an EdgeFrame, with the message intact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.pb-c.h"
#include "ke_wire.h"

#include <stdlib.h>
#include <string.h>

static void test_wire_sequenced_frame_decodes_both_ways(void **state)
{
    (void)state;
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    uint8_t content[300];
    memset(content, 'x', sizeof(content)); /* > 127 bytes: multi-byte lengths */
    h.resource_version = 1234567;
    r.resource = "node/edge-1/default/Pod/web";
    r.operation = KE__V1__OPERATION__OPERATION_UPDATE;
    m.header = &h;
    m.route = &r;
    m.content.data = content;
    m.content.len = sizeof(content);
    size_t len = protobuf_c_message_get_packed_size(&m.base);
    uint8_t *packed = malloc(len);
    protobuf_c_message_pack(&m.base, packed);

    size_t flen = 0;
    uint8_t *frame = ke_wire_sequenced_frame(300000, packed, len, &flen);
    assert_non_null(frame);
    Ke__V1__CloudFrame *cf = ke__v1__cloud_frame__unpack(NULL, flen, frame);
    assert_non_null(cf);
    assert_int_equal(cf->frame_case, KE__V1__CLOUD_FRAME__FRAME_MESSAGE);
    assert_int_equal(cf->message->seq, 300000);
    assert_int_equal(cf->message->message->header->resource_version, 1234567);
    assert_string_equal(cf->message->message->route->resource, "node/edge-1/default/Pod/web");
    assert_int_equal(cf->message->message->content.len, sizeof(content));
    ke__v1__cloud_frame__free_unpacked(cf, NULL);
    Ke__V1__EdgeFrame *ef = ke__v1__edge_frame__unpack(NULL, flen, frame);
    assert_non_null(ef);
    assert_int_equal(ef->frame_case, KE__V1__EDGE_FRAME__FRAME_MESSAGE);
    assert_int_equal(ef->message->seq, 300000);
    ke__v1__edge_frame__free_unpacked(ef, NULL);
    free(frame);
    free(packed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_sequenced_frame_decodes_both_ways),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
