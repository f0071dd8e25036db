/*
 * fuzz_tunnel_frame.c — libFuzzer harness for the Tunnel's frames
 * (api/cloudhub.proto): the bytes of one gRPC message as CloudHub reads it
 * from an edge (EdgeFrame) and as edgecore reads it from the cloud
 * (CloudFrame), through protobuf-c's unpackers. For an EdgeFrame carrying a
 * message it then does what tunnel_on_message does first: find the owning
 * node in route.resource with ch_resource_node (services/cloudhub).
 *
 * Every decoded frame is packed again, which walks every field the
 * unpacker produced; the contracts checked (abort when broken):
 *   - pack writes exactly get_packed_size bytes;
 *   - ch_resource_node either refuses or yields a non-empty name without
 *     '/' that is the text between "node/" and the next '/'.
 * Seeds: tests/fuzz/corpus/tunnel_frame/ (made with protoc --encode).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloudhub.pb-c.h"
#include "cloudhub_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* repack packs msg and checks the size protobuf-c promised. */
static void repack(const ProtobufCMessage *msg)
{
    size_t want = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(want ? want : 1);
    if (!buf)
        return;
    if (protobuf_c_message_pack(msg, buf) != want)
        abort();
    free(buf);
}

/* check_resource runs CloudHub's resource-key parsing on r. */
static void check_resource(const char *r)
{
    char node[CH_NODE_NAME_MAX];
    if (ch_resource_node(r, node, sizeof(node)) != 0)
        return;
    size_t n = strlen(node);
    if (n == 0 || n >= sizeof(node) || strchr(node, '/') != NULL ||
        strncmp(r, "node/", 5) != 0 || strncmp(r + 5, node, n) != 0 || r[5 + n] != '/')
        abort();
}

/* resource_of returns the route.resource of a sequenced message, or NULL. */
static const char *resource_of(const Ke__V1__SequencedMessage *sm)
{
    if (!sm || !sm->message || !sm->message->route)
        return NULL;
    return sm->message->route->resource;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Ke__V1__EdgeFrame *ef = ke__v1__edge_frame__unpack(NULL, size, data);
    if (ef) {
        repack(&ef->base);
        if (ef->frame_case == KE__V1__EDGE_FRAME__FRAME_MESSAGE) {
            const char *r = resource_of(ef->message);
            if (r)
                check_resource(r);
        }
        ke__v1__edge_frame__free_unpacked(ef, NULL);
    }

    Ke__V1__CloudFrame *cf = ke__v1__cloud_frame__unpack(NULL, size, data);
    if (cf) {
        repack(&cf->base);
        if (cf->frame_case == KE__V1__CLOUD_FRAME__FRAME_MESSAGE) {
            const char *r = resource_of(cf->message);
            if (r)
                check_resource(r);
        }
        ke__v1__cloud_frame__free_unpacked(cf, NULL);
    }
    return 0;
}
