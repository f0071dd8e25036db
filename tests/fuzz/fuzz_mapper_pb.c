/*
 * fuzz_mapper_pb.c — libFuzzer harness for every nanopb decoder of
 * api/mapper.proto (mappers/sdk, firmware and host mappers): MapperFrame
 * and each of its submessages, PropertyValue, DesiredUpdate,
 * ReportedUpdate, TwinGet, StateReport and Refusal.
 *
 * The first byte picks the message type (mod 7), the rest is its encoding;
 * the whole input is also decoded as a MapperFrame. Contracts checked
 * (abort when broken): whatever decodes encodes again, within the type's
 * generated _size bound, and decoding that encoding gives the same bytes
 * once more (a fixed point); strings stay NUL-terminated in their arrays
 * and repeated counts within their bounds.
 * Seeds: tests/fuzz/corpus/mapper_pb/ (a type byte + protoc --encode output).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <pb_decode.h>
#include <pb_encode.h>

#include "mapper.pb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct kind {
    const pb_msgdesc_t *fields;
    size_t bound; /* the generated _size macro */
} kind;

static const kind kinds[] = {
    {ke_mapper_v1_MapperFrame_fields, ke_mapper_v1_MapperFrame_size},
    {ke_mapper_v1_PropertyValue_fields, ke_mapper_v1_PropertyValue_size},
    {ke_mapper_v1_DesiredUpdate_fields, ke_mapper_v1_DesiredUpdate_size},
    {ke_mapper_v1_ReportedUpdate_fields, ke_mapper_v1_ReportedUpdate_size},
    {ke_mapper_v1_TwinGet_fields, ke_mapper_v1_TwinGet_size},
    {ke_mapper_v1_StateReport_fields, ke_mapper_v1_StateReport_size},
    {ke_mapper_v1_Refusal_fields, ke_mapper_v1_Refusal_size},
};

/* the largest message struct: every type decodes into this */
typedef union any {
    ke_mapper_v1_MapperFrame frame;
    ke_mapper_v1_PropertyValue pv;
    ke_mapper_v1_DesiredUpdate desired;
    ke_mapper_v1_ReportedUpdate reported;
    ke_mapper_v1_TwinGet get;
    ke_mapper_v1_StateReport state;
    ke_mapper_v1_Refusal refused;
} any;

static void check_pv(const ke_mapper_v1_PropertyValue *pv)
{
    if (!memchr(pv->name, 0, sizeof(pv->name)) || !memchr(pv->value, 0, sizeof(pv->value)))
        abort();
}

static void check_update(const char *device, size_t dsize, pb_size_t n,
                         const ke_mapper_v1_PropertyValue *pv, size_t max)
{
    if (!memchr(device, 0, dsize) || n > max)
        abort();
    for (pb_size_t i = 0; i < n; i++)
        check_pv(&pv[i]);
}

static void check_frame(const ke_mapper_v1_MapperFrame *f)
{
    switch (f->which_body) {
    case 0:
    case ke_mapper_v1_MapperFrame_ack_tag:
        break;
    case ke_mapper_v1_MapperFrame_desired_tag:
        check_update(f->body.desired.device, sizeof(f->body.desired.device),
                     f->body.desired.properties_count, f->body.desired.properties, 8);
        break;
    case ke_mapper_v1_MapperFrame_reported_tag:
        check_update(f->body.reported.device, sizeof(f->body.reported.device),
                     f->body.reported.properties_count, f->body.reported.properties, 8);
        break;
    case ke_mapper_v1_MapperFrame_get_tag:
        if (!memchr(f->body.get.device, 0, sizeof(f->body.get.device)))
            abort();
        break;
    case ke_mapper_v1_MapperFrame_state_tag:
        if (!memchr(f->body.state.device, 0, sizeof(f->body.state.device)))
            abort();
        break;
    case ke_mapper_v1_MapperFrame_refused_tag:
        if (!memchr(f->body.refused.reason, 0, sizeof(f->body.refused.reason)))
            abort();
        break;
    default:
        abort(); /* nanopb set a tag that is not in the oneof */
    }
}

/* one decodes data as kind k and checks the contracts. */
static void one(size_t k, const uint8_t *data, size_t size)
{
    static any a, b;
    static uint8_t enc[2048], enc2[2048];
    memset(&a, 0, sizeof(a));
    pb_istream_t is = pb_istream_from_buffer(data, size);
    if (!pb_decode(&is, kinds[k].fields, &a))
        return;
    if (k == 0)
        check_frame(&a.frame);
    else if (k == 1)
        check_pv(&a.pv);
    else if (k == 2)
        check_update(a.desired.device, sizeof(a.desired.device), a.desired.properties_count,
                     a.desired.properties, 8);
    else if (k == 3)
        check_update(a.reported.device, sizeof(a.reported.device), a.reported.properties_count,
                     a.reported.properties, 8);
    pb_ostream_t os = pb_ostream_from_buffer(enc, sizeof(enc));
    if (!pb_encode(&os, kinds[k].fields, &a))
        abort();
    if (os.bytes_written > kinds[k].bound)
        abort();
    memset(&b, 0, sizeof(b));
    is = pb_istream_from_buffer(enc, os.bytes_written);
    if (!pb_decode(&is, kinds[k].fields, &b))
        abort();
    pb_ostream_t os2 = pb_ostream_from_buffer(enc2, sizeof(enc2));
    if (!pb_encode(&os2, kinds[k].fields, &b))
        abort();
    if (os2.bytes_written != os.bytes_written || memcmp(enc, enc2, os.bytes_written) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    one(data[0] % (sizeof(kinds) / sizeof(kinds[0])), data + 1, size - 1);
    one(0, data, size);
    return 0;
}
