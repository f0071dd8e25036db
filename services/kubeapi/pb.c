/*
 * pb.c — request bodies in Kubernetes' protobuf encoding, which kubectl's
 * typed commands send (kubectl create configmap|secret|namespace): the
 * envelope "k8s\0" + Unknown{typeMeta, raw}, raw being the object
 * (api/third_party/k8s/wire.proto), decoded with protobuf-c into the same
 * JSON object a JSON body gives. Other kinds are 415 (their bodies are
 * JSON from every client but those commands).
 */
#include "kubeapi_internal.h"

#include "k8s/wire.pb-c.h"
#include "ke_err.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char MAGIC[4] = {'k', '8', 's', 0};

/* put_str sets key to s when s is set and not empty. */
static int put_str(json_t *o, const char *key, const char *s)
{
    return s && *s ? json_object_set_new(o, key, json_string(s)) : 0;
}

static json_t *base64(const ProtobufCBinaryData *b)
{
    char *enc = malloc(4 * ((b->len + 2) / 3) + 1);
    if (!enc)
        return NULL;
    EVP_EncodeBlock((unsigned char *)enc, b->data, (int)b->len);
    json_t *s = json_string(enc);
    free(enc);
    return s;
}

/* map_json converts a protobuf map (its n entry messages) into a JSON
 * object, reading each entry through its descriptor: key, then a string
 * value as it is or a bytes value base64-encoded (as JSON carries
 * Secret.data and ConfigMap.binaryData). NULL when out of memory. */
static json_t *map_json(void *const *entries, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++) {
        const ProtobufCMessage *e = entries[i];
        const ProtobufCFieldDescriptor *f = e->descriptor->fields;
        const char *key = *(char *const *)((const char *)e + f[0].offset);
        const void *at = (const char *)e + f[1].offset;
        json_t *v = f[1].type == PROTOBUF_C_TYPE_BYTES
                        ? base64((const ProtobufCBinaryData *)at)
                        : json_string(*(char *const *)at ? *(char *const *)at : "");
        if (json_object_set_new(o, key ? key : "", v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* meta_json converts ObjectMeta. */
static json_t *meta_json(const K8s__Wire__ObjectMeta *m)
{
    json_t *o = json_object();
    if (!o || !m)
        return o;
    int bad = put_str(o, "name", m->name) || put_str(o, "generateName", m->generatename) ||
              put_str(o, "namespace", m->namespace_);
    if (m->n_labels)
        bad |= json_object_set_new(o, "labels",
                                   map_json((void *const *)m->labels, m->n_labels)) != 0;
    if (m->n_annotations)
        bad |= json_object_set_new(o, "annotations", map_json((void *const *)m->annotations,
                                                              m->n_annotations)) != 0;
    if (m->n_finalizers) {
        json_t *f = json_array();
        for (size_t i = 0; f && i < m->n_finalizers; i++)
            bad |= json_array_append_new(f, json_string(m->finalizers[i])) != 0;
        bad |= json_object_set_new(o, "finalizers", f) != 0;
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *configmap_json(const ProtobufCBinaryData *raw)
{
    K8s__Wire__ConfigMap *m = k8s__wire__config_map__unpack(NULL, raw->len, raw->data);
    if (!m)
        return NULL;
    json_t *o = json_pack("{s:s, s:s, s:o}", "apiVersion", "v1", "kind", "ConfigMap", "metadata",
                          meta_json(m->metadata));
    int bad = !o;
    if (o && m->n_data)
        bad |= json_object_set_new(o, "data", map_json((void *const *)m->data, m->n_data)) != 0;
    if (o && m->n_binarydata)
        bad |= json_object_set_new(o, "binaryData", map_json((void *const *)m->binarydata,
                                                             m->n_binarydata)) != 0;
    if (o && m->has_immutable)
        bad |= json_object_set_new(o, "immutable", json_boolean(m->immutable)) != 0;
    k8s__wire__config_map__free_unpacked(m, NULL);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *secret_json(const ProtobufCBinaryData *raw)
{
    K8s__Wire__Secret *m = k8s__wire__secret__unpack(NULL, raw->len, raw->data);
    if (!m)
        return NULL;
    json_t *o = json_pack("{s:s, s:s, s:o}", "apiVersion", "v1", "kind", "Secret", "metadata",
                          meta_json(m->metadata));
    int bad = !o;
    if (o && m->n_data)
        bad |= json_object_set_new(o, "data", map_json((void *const *)m->data, m->n_data)) != 0;
    if (o && m->n_stringdata)
        bad |= json_object_set_new(o, "stringData", map_json((void *const *)m->stringdata,
                                                             m->n_stringdata)) != 0;
    if (o)
        bad |= put_str(o, "type", m->type) != 0;
    if (o && m->has_immutable)
        bad |= json_object_set_new(o, "immutable", json_boolean(m->immutable)) != 0;
    k8s__wire__secret__free_unpacked(m, NULL);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *namespace_json(const ProtobufCBinaryData *raw)
{
    K8s__Wire__Namespace *m = k8s__wire__namespace__unpack(NULL, raw->len, raw->data);
    if (!m)
        return NULL;
    json_t *o = json_pack("{s:s, s:s, s:o}", "apiVersion", "v1", "kind", "Namespace", "metadata",
                          meta_json(m->metadata));
    int bad = !o;
    if (o && m->spec && m->spec->n_finalizers) {
        json_t *f = json_array();
        for (size_t i = 0; f && i < m->spec->n_finalizers; i++)
            bad |= json_array_append_new(f, json_string(m->spec->finalizers[i])) != 0;
        bad |= json_object_set_new(o, "spec", json_pack("{s:o}", "finalizers", f)) != 0;
    }
    k8s__wire__namespace__free_unpacked(m, NULL);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int ka_pb_to_json(const void *body, size_t len, json_t **out, char *why, size_t wlen)
{
    *out = NULL;
    if (len < sizeof(MAGIC) || memcmp(body, MAGIC, sizeof(MAGIC)) != 0) {
        snprintf(why, wlen, "the protobuf body does not start with the Kubernetes envelope");
        return KE_EINVAL;
    }
    K8s__Wire__Unknown *u = k8s__wire__unknown__unpack(NULL, len - sizeof(MAGIC),
                                                       (const uint8_t *)body + sizeof(MAGIC));
    if (!u || !u->typemeta || !u->typemeta->kind || !u->has_raw) {
        if (u)
            k8s__wire__unknown__free_unpacked(u, NULL);
        snprintf(why, wlen, "the protobuf body is not a Kubernetes object");
        return KE_EINVAL;
    }
    const char *av = u->typemeta->apiversion ? u->typemeta->apiversion : "";
    const char *kind = u->typemeta->kind;
    int rc = 0;
    if (strcmp(av, "v1") != 0 ||
        (strcmp(kind, "ConfigMap") != 0 && strcmp(kind, "Secret") != 0 &&
         strcmp(kind, "Namespace") != 0)) {
        snprintf(why, wlen, "the body of the request was in an unknown format - protobuf is "
                            "accepted for v1 ConfigMap, Secret and Namespace only; accepted "
                            "media types include: application/json");
        rc = KE_EPROTO;
    } else {
        *out = strcmp(kind, "ConfigMap") == 0 ? configmap_json(&u->raw)
               : strcmp(kind, "Secret") == 0  ? secret_json(&u->raw)
                                              : namespace_json(&u->raw);
        if (!*out) {
            snprintf(why, wlen, "the protobuf body is not a valid %s", kind);
            rc = KE_EINVAL;
        }
    }
    k8s__wire__unknown__free_unpacked(u, NULL);
    return rc;
}
