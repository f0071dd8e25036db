/*
 * resources.c — requests on resources: the verb from the method and path,
 * the authorizer's decision, then get, list, create, update, patch,
 * delete, deletecollection and the status subresource, through the same
 * store and write rules as the gRPC APIs (edgecontroller_write/delete).
 *
 * Kubernetes' semantics, where they differ from the gRPC APIs' Apply:
 * POST creates only (409 AlreadyExists), PUT updates only (404), PATCH
 * reads, patches and updates at the version it read (retried on a
 * concurrent write unless the patch itself names a resourceVersion).
 * Unknown fields are refused with fieldValidation=Strict (400), reported in
 * a Warning header otherwise (the default, Warn), as the API server does.
 */
#include "kubeapi_internal.h"

#include "ke_err.h"
#include "ke_k8s_patch.h"
#include "ke_k8s_schema.h"
#include "ke_log.h"
#include "ke_pki.h"
#include "ke_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Patches retried when another write got in between the read and the
 * write (and the patch does not pin a resourceVersion). */
#define KA_PATCH_TRIES 5
/* Objects one deletecollection deletes at most (as a page). */
#define KA_DELETECOLLECTION_MAX 5000

static enum MHD_Result not_found_path(struct MHD_Connection *c)
{
    return ka_send_status(c, 404, "NotFound", "the server could not find the requested resource",
                          NULL, NULL);
}

static enum MHD_Result method_not_allowed(struct MHD_Connection *c)
{
    return ka_send_status(c, 405, "MethodNotAllowed",
                          "the server does not allow this method on the requested resource", NULL,
                          NULL);
}

/* deny answers the authorizer's refusal: 401, 403 Forbidden as the API
 * server words it, or 500. */
static enum MHD_Result deny(struct MHD_Connection *c, int code, const char *why,
                            const ke_k8s_path *p)
{
    char msg[1024];
    if (code == KE_RPC_UNAUTHENTICATED)
        return ka_send_status(c, 401, "Unauthorized", why, NULL, NULL);
    if (code == KE_RPC_PERMISSION_DENIED) {
        if (p->name[0])
            snprintf(msg, sizeof(msg), "%s \"%s\" is forbidden: %s", p->resource, p->name, why);
        else
            snprintf(msg, sizeof(msg), "%s is forbidden: %s", p->resource, why);
        return ka_send_status(c, 403, "Forbidden", msg, p->kind, p->name);
    }
    if (code == KE_RPC_INVALID_ARGUMENT)
        return ka_send_status(c, 400, "BadRequest", why, p->kind, p->name);
    return ka_send_status(c, 500, "InternalError", why, p->kind, p->name);
}

/* load_json parses the request's body (`what` names it in the reason):
 * the JSON value, or NULL with "the <what> is empty" / "the <what> is not
 * valid JSON: ... (line L, column C)" in msg. */
static json_t *load_json(const ka_req *r, size_t flags, const char *what, char *msg,
                         size_t len)
{
    json_error_t je;
    json_t *v = r->len ? json_loadb(r->body, r->len, flags, &je) : NULL;
    if (!v && !r->len)
        snprintf(msg, len, "the %s is empty", what);
    else if (!v)
        ke_err_why(0, msg, len, "the %s is not valid JSON: %s (line %d, column %d)", what,
                   je.text, je.line, je.column);
    return v;
}

/* parse_body reads the request body as a JSON object. On failure it has
 * answered 400 and returns NULL. */
static json_t *parse_body(struct MHD_Connection *c, ka_req *r, enum MHD_Result *res)
{
    const char *ct = r->content_type ? r->content_type : "application/json";
    if (strstr(ct, "yaml") && !strstr(ct, "apply-patch")) {
        *res = ka_send_status(c, 415, "UnsupportedMediaType",
                              "the body of the request was in an unknown format - accepted media "
                              "types include: application/json", NULL, NULL);
        return NULL;
    }
    if (strstr(ct, "protobuf")) {
        char why[300];
        json_t *o = NULL;
        int rc = ka_pb_to_json(r->body ? r->body : "", r->len, &o, why, sizeof(why));
        if (rc != 0)
            *res = ka_send_status(c, rc == KE_EPROTO ? 415 : 400,
                                  rc == KE_EPROTO ? "UnsupportedMediaType" : "BadRequest", why,
                                  NULL, NULL);
        return o;
    }
    char msg[400];
    json_t *o = load_json(r, JSON_REJECT_DUPLICATES, "request body", msg, sizeof(msg));
    if (!o) {
        *res = ka_send_status(c, 400, "BadRequest", msg, NULL, NULL);
        return NULL;
    }
    return o;
}

/* check_type: the object's apiVersion and kind are those of the path. */
static int check_type(const json_t *obj, const ke_k8s_kind *k, char *why, size_t len)
{
    if (!json_is_object(obj)) {
        snprintf(why, len, "the body must be a JSON object");
        return -1;
    }
    const char *av = ke_k8s_str(obj, "apiVersion"), *kind = ke_k8s_str(obj, "kind");
    if (!kind || !*kind) {
        snprintf(why, len, "Object 'Kind' is missing in the body");
        return -1;
    }
    if (!av || !*av) {
        snprintf(why, len, "Object 'apiVersion' is missing in the body");
        return -1;
    }
    if (strcmp(av, k->api_version) != 0) {
        snprintf(why, len, "the API version in the data (%.64s) does not match the expected API "
                           "version (%s)", av, k->api_version);
        return -1;
    }
    if (strcmp(kind, k->kind) != 0) {
        snprintf(why, len, "%.64s in version \"%s\" cannot be handled as a %s", kind,
                 k->api_version, k->kind);
        return -1;
    }
    return 0;
}

/* field_check applies fieldValidation: Strict refuses unknown fields (and
 * fields of the wrong type), Warn (the default) reports them in warn,
 * Ignore skips. 0, or -1 after answering 400. */
static int field_check(struct MHD_Connection *c, ka_req *r, const json_t *obj, char *warn,
                       size_t wlen, enum MHD_Result *res)
{
    const char *fv = r->q.field_validation;
    if (fv && strcmp(fv, "Ignore") == 0)
        return 0;
    char why[1024];
    int rc = ke_k8s_schema_check(obj, why, sizeof(why));
    if (rc == 0 || rc == KE_ENOTFOUND)
        return 0;
    if (fv && strcmp(fv, "Strict") == 0) {
        char msg[1100];
        snprintf(msg, sizeof(msg), "%s%s", strncmp(why, "strict decoding error", 21) == 0 ? ""
                                                                      : "strict decoding error: ",
                 why);
        *res = ka_send_status(c, 400, "BadRequest", msg, NULL, NULL);
        return -1;
    }
    snprintf(warn, wlen, "%s", why);
    return 0;
}

/* reply_objects answers a list or one object, as a Table when asked. */
static enum MHD_Result reply_list(struct MHD_Connection *c, ka_req *r, const ke_k8s_kind *k,
                                  json_t *items, uint64_t rev, const char *cont)
{
    int table = ke_k8s_accepts_table(r->accept);
    if (table) {
        json_t *t = ke_k8s_table(k, table == 1 ? "v1" : "v1beta1", items, r->q.include_object,
                                 rev, cont, ke_time_wall_ms());
        json_decref(items);
        return ka_send_json(c, 200, t, NULL);
    }
    return ka_send_json(c, 200, ke_k8s_list(k, items, rev, cont), NULL);
}

static enum MHD_Result reply_object(struct MHD_Connection *c, ka_req *r, const ke_k8s_kind *k,
                                    unsigned code, json_t *obj, const char *warn)
{
    int table = ke_k8s_accepts_table(r->accept);
    if (table && strcmp(r->method, "GET") == 0) {
        json_t *items = json_pack("[O]", obj);
        const char *rv = ke_k8s_str(obj, "metadata.resourceVersion");
        json_t *t = items ? ke_k8s_table(k, table == 1 ? "v1" : "v1beta1", items,
                                         r->q.include_object, rv ? strtoull(rv, NULL, 10) : 0,
                                         NULL, ke_time_wall_ms())
                          : NULL;
        json_decref(items);
        json_decref(obj);
        return ka_send_json(c, code, t, warn);
    }
    return ka_send_json(c, code, obj, warn);
}

/* ---- verbs ---- */

static enum MHD_Result do_get(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                              const ke_k8s_path *p, const char *ns)
{
    json_t *obj = NULL;
    int rc = ke_store_get(ka->cfg.store, p->kind->kind, ns, p->name, &obj);
    if (rc != 0) {
        char why[400];
        if (rc == KE_ENOTFOUND)
            snprintf(why, sizeof(why), "%s \"%s\" not found", p->resource, p->name);
        else
            snprintf(why, sizeof(why), "store: %s", ke_strerror(rc));
        return ka_send_error(c, rc, why, p->kind, p->name);
    }
    return reply_object(c, r, p->kind, 200, obj, NULL);
}

static enum MHD_Result do_list(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                               const ke_k8s_path *p, const char *ns)
{
    ke_store *st = ka->cfg.store;
    char why[512];
    if (ke_store_selector_check(r->q.label_selector, r->q.field_selector, why, sizeof(why)) != 0)
        return ka_send_status(c, 400, "BadRequest", why, p->kind, NULL);
    uint64_t now = ke_store_revision(st);
    const char *match = r->q.resource_version_match;
    if (r->q.rv > now && !(r->q.cont && *r->q.cont)) {
        snprintf(why, sizeof(why), "Too large resource version: %llu, current: %llu",
                 (unsigned long long)r->q.rv, (unsigned long long)now);
        return ka_send_status(c, 504, "Timeout", why, p->kind, NULL);
    }
    if (match && strcmp(match, "Exact") == 0 && r->q.rv != now && !(r->q.cont && *r->q.cont)) {
        snprintf(why, sizeof(why), "resourceVersion %llu: an exact list is served at the "
                                   "current revision (%llu) only; list without it",
                 (unsigned long long)r->q.rv, (unsigned long long)now);
        return ka_send_status(c, 410, "Expired", why, p->kind, NULL);
    }
    json_t *items = NULL;
    uint64_t rev = 0;
    char next[KE_STORE_CONTINUE_MAX] = "";
    /* no limit: the whole list, page after page, as one answer */
    size_t limit = r->q.limit ? r->q.limit : KE_STORE_LIST_LIMIT_MAX;
    int rc = ke_store_list_page(st, p->kind->kind, ns, r->q.label_selector, r->q.field_selector,
                                limit, r->q.cont, &items, &rev, next, sizeof(next));
    while (rc == 0 && !r->q.limit && next[0]) {
        json_t *more = NULL;
        char tok[KE_STORE_CONTINUE_MAX];
        snprintf(tok, sizeof(tok), "%s", next);
        rc = ke_store_list_page(st, p->kind->kind, ns, r->q.label_selector, r->q.field_selector,
                                limit, tok, &more, &rev, next, sizeof(next));
        if (rc == 0 && json_array_extend(items, more) != 0)
            rc = KE_ENOMEM;
        json_decref(more);
    }
    if (rc != 0) {
        json_decref(items);
        if (rc == KE_EGONE)
            return ka_send_status(c, 410, "Expired",
                                  "The provided continue parameter is too old to display a "
                                  "consistent list result. You can start a new list without the "
                                  "continue parameter.", p->kind, NULL);
        if (rc == KE_EINVAL) {
            ke_store_continue_check(st, p->kind->kind, ns, r->q.cont, why, sizeof(why));
            return ka_send_status(c, 400, "BadRequest", why[0] ? why : "invalid continue token",
                                  p->kind, NULL);
        }
        snprintf(why, sizeof(why), "list: %s", ke_strerror(rc));
        return ka_send_error(c, rc, why, p->kind, NULL);
    }
    return reply_list(c, r, p->kind, items, rev, next);
}

/* fill_ns gives obj the namespace of the path (or checks it matches). */
static int fill_ns(json_t *obj, const ke_k8s_path *p, const char *ns, char *why, size_t len)
{
    json_t *md = json_object_get(obj, "metadata");
    if (!json_is_object(md)) {
        snprintf(why, len, "metadata: required, an object");
        return KE_EINVAL;
    }
    if (!p->kind->namespaced)
        return 0;
    const char *have = ke_k8s_str(obj, "metadata.namespace");
    if (have && *have && strcmp(have, ns) != 0) {
        snprintf(why, len, "the namespace of the provided object does not match the namespace "
                           "sent on the request");
        return KE_ECONFLICT;
    }
    if (!have || !*have)
        json_object_set_new(md, "namespace", json_string(ns));
    return 0;
}

/* generate_name gives obj a name from metadata.generateName, as the API
 * server does (five random characters appended). */
static void generate_name(json_t *obj)
{
    json_t *md = json_object_get(obj, "metadata");
    const char *gen = json_string_value(json_object_get(md, "generateName"));
    if (!gen || json_object_get(md, "name"))
        return;
    static const char alnum[] = "bcdfghjklmnpqrstvwxz2456789";
    char hex[16], name[KE_STORE_NAME_MAX + 1];
    if (ke_pki_random_hex(5, hex) != 0)
        return;
    char suffix[6];
    for (int i = 0; i < 5; i++)
        suffix[i] = alnum[(unsigned char)hex[i * 2] % (sizeof(alnum) - 1)];
    suffix[5] = '\0';
    snprintf(name, sizeof(name), "%.*s%s", KE_STORE_NAME_MAX - 5, gen, suffix);
    json_object_set_new(md, "name", json_string(name));
}

static int dry_run(const ka_req *r)
{
    return r->q.dry_run && strcmp(r->q.dry_run, "All") == 0;
}

/* write_error answers a failed write or delete of `name`: a conflict in
 * the API server's words, anything else as it is. */
static enum MHD_Result write_error(struct MHD_Connection *c, const ke_k8s_path *p, int rc,
                                   const char *why, const char *name)
{
    if (rc == KE_ECONFLICT) {
        char msg[1200];
        snprintf(msg, sizeof(msg), "Operation cannot be fulfilled on %s \"%s\": %s", p->resource,
                 name, why);
        return ka_send_error(c, rc, msg, p->kind, name);
    }
    return ka_send_error(c, rc, why, p->kind, name);
}

/* write answers the result of edgecontroller_write. */
static enum MHD_Result write_result(struct MHD_Connection *c, ka_req *r, const ke_k8s_path *p,
                                    int rc, json_t *out, const char *why, const char *name,
                                    unsigned ok_code, const char *warn)
{
    if (rc != 0) {
        json_decref(out);
        return write_error(c, p, rc, why, name);
    }
    return reply_object(c, r, p->kind, ok_code, out, warn);
}

static enum MHD_Result do_create(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                                 const ke_k8s_path *p, const char *ns)
{
    enum MHD_Result res;
    json_t *obj = parse_body(c, r, &res);
    if (!obj)
        return res;
    char why[1024], warn[1024] = "";
    if (check_type(obj, p->kind, why, sizeof(why)) != 0) {
        json_decref(obj);
        return ka_send_status(c, 400, "BadRequest", why, p->kind, NULL);
    }
    int rc = fill_ns(obj, p, ns, why, sizeof(why));
    if (rc != 0) {
        json_decref(obj);
        return ka_send_status(c, rc == KE_ECONFLICT ? 400 : 422,
                              rc == KE_ECONFLICT ? "BadRequest" : "Invalid", why, p->kind, NULL);
    }
    generate_name(obj);
    json_object_del(json_object_get(obj, "metadata"), "generateName");
    if (field_check(c, r, obj, warn, sizeof(warn), &res) != 0) {
        json_decref(obj);
        return res;
    }
    char name[KE_STORE_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%s",
             ke_k8s_str(obj, "metadata.name") ? ke_k8s_str(obj, "metadata.name") : "");
    /* a create names no version: the store gives one */
    json_object_del(json_object_get(obj, "metadata"), "resourceVersion");
    json_t *out = NULL;
    rc = edgecontroller_write(ka->cfg.ec, obj, EC_WRITE_CREATE, dry_run(r), &out, why,
                              sizeof(why));
    json_decref(obj);
    return write_result(c, r, p, rc, out, why, name, 201, warn);
}

/* same_identity: the body names the object of the path. */
static int same_identity(const json_t *obj, const ke_k8s_path *p, char *why, size_t len)
{
    const char *name = ke_k8s_str(obj, "metadata.name");
    if (!name || strcmp(name, p->name) != 0) {
        snprintf(why, len, "the name of the object (%.64s) does not match the name on the URL "
                           "(%s)", name ? name : "", p->name);
        return -1;
    }
    return 0;
}

static enum MHD_Result do_update(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                                 const ke_k8s_path *p, const char *ns)
{
    enum MHD_Result res;
    json_t *obj = parse_body(c, r, &res);
    if (!obj)
        return res;
    char why[1024], warn[1024] = "";
    if (check_type(obj, p->kind, why, sizeof(why)) != 0 ||
        same_identity(obj, p, why, sizeof(why)) != 0) {
        json_decref(obj);
        return ka_send_status(c, 400, "BadRequest", why, p->kind, p->name);
    }
    int rc = fill_ns(obj, p, ns, why, sizeof(why));
    if (rc != 0) {
        json_decref(obj);
        return ka_send_status(c, 400, "BadRequest", why, p->kind, p->name);
    }
    if (field_check(c, r, obj, warn, sizeof(warn), &res) != 0) {
        json_decref(obj);
        return res;
    }
    json_t *out = NULL;
    if (strcmp(p->sub, "status") == 0) {
        rc = dry_run(r) ? ke_store_get(ka->cfg.store, p->kind->kind, ns, p->name, &out)
                        : ke_store_update_status(ka->cfg.store, obj, &out);
        if (rc == KE_ENOTFOUND)
            snprintf(why, sizeof(why), "%s \"%s\" not found", p->resource, p->name);
        else if (rc == KE_ECONFLICT)
            snprintf(why, sizeof(why), "the object has been modified; please apply your changes "
                                       "to the latest version and try again");
        else if (rc != 0)
            snprintf(why, sizeof(why), "store: %s", ke_strerror(rc));
    } else {
        rc = edgecontroller_write(ka->cfg.ec, obj, EC_WRITE_UPDATE, dry_run(r), &out, why,
                                  sizeof(why));
        if (rc == KE_ECONFLICT)
            snprintf(why, sizeof(why), "the object has been modified; please apply your changes "
                                       "to the latest version and try again");
    }
    json_decref(obj);
    return write_result(c, r, p, rc, out, why, p->name, 200, warn);
}

/* patch_meta gives the strategic merge patch engine the schema's patch
 * metadata. */
static int patch_meta(void *ud, const char *kind, const char *path, ke_k8s_patch_meta *meta)
{
    (void)ud;
    return ke_k8s_schema_patch_meta(NULL, kind, path, meta);
}

static enum MHD_Result do_patch(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                                const ke_k8s_path *p, const char *ns)
{
    const char *ct = r->content_type ? r->content_type : "";
    enum { JSON_PATCH, MERGE, STRATEGIC } type;
    if (strncmp(ct, "application/json-patch+json", 27) == 0)
        type = JSON_PATCH;
    else if (strncmp(ct, "application/merge-patch+json", 28) == 0)
        type = MERGE;
    else if (strncmp(ct, "application/strategic-merge-patch+json", 38) == 0)
        type = STRATEGIC;
    else if (strncmp(ct, "application/apply-patch", 23) == 0)
        return ka_send_status(c, 415, "UnsupportedMediaType",
                              "server-side apply is not supported by this server: use "
                              "client-side apply (kubectl apply without --server-side)",
                              p->kind, p->name);
    else
        return ka_send_status(c, 415, "UnsupportedMediaType",
                              "the body of the request was in an unknown format - accepted media "
                              "types include: application/json-patch+json, "
                              "application/merge-patch+json, "
                              "application/strategic-merge-patch+json", p->kind, p->name);
    if (type == STRATEGIC && strchr(p->kind->api_version, '/') &&
        strncmp(p->kind->api_version, "rbac.", 5) != 0)
        return ka_send_status(c, 415, "UnsupportedMediaType",
                              "the body of the request was in an unknown format - accepted media "
                              "types include: application/json-patch+json, "
                              "application/merge-patch+json, application/apply-patch+yaml",
                              p->kind, p->name);
    char msg[400];
    json_t *patch = load_json(r, 0, "patch", msg, sizeof(msg));
    if (!patch)
        return ka_send_status(c, 400, "BadRequest", msg, p->kind, p->name);
    if (type == JSON_PATCH ? !json_is_array(patch) : !json_is_object(patch)) {
        json_decref(patch);
        return ka_send_status(c, 400, "BadRequest",
                              type == JSON_PATCH ? "a JSON patch must be an array of operations"
                                                 : "a merge patch must be a JSON object",
                              p->kind, p->name);
    }
    int pins_rv = type != JSON_PATCH &&
                  json_object_get(json_object_get(patch, "metadata"), "resourceVersion");
    char why[1024], warn[1024] = "";
    enum MHD_Result res = MHD_NO;
    for (int attempt = 0; attempt < KA_PATCH_TRIES; attempt++) {
        json_t *cur = NULL;
        int rc = ke_store_get(ka->cfg.store, p->kind->kind, ns, p->name, &cur);
        if (rc != 0) {
            json_decref(patch);
            if (rc == KE_ENOTFOUND)
                snprintf(why, sizeof(why), "%s \"%s\" not found", p->resource, p->name);
            else
                snprintf(why, sizeof(why), "store: %s", ke_strerror(rc));
            return ka_send_error(c, rc, why, p->kind, p->name);
        }
        const char *cur_rv = ke_k8s_str(cur, "metadata.resourceVersion");
        char rv[32];
        snprintf(rv, sizeof(rv), "%s", cur_rv ? cur_rv : "");
        json_t *doc = cur;
        if (type == JSON_PATCH)
            rc = ke_k8s_json_patch(&doc, patch, why, sizeof(why));
        else if (type == MERGE)
            rc = ke_k8s_merge_patch(&doc, patch, why, sizeof(why));
        else
            rc = ke_k8s_strategic_patch(&doc, patch, p->kind->kind, patch_meta, NULL, why,
                                        sizeof(why));
        if (rc != 0) {
            json_decref(doc);
            json_decref(patch);
            if (rc == KE_ECONFLICT)
                return ka_send_status(c, 422, "Invalid", why, p->kind, p->name);
            if (rc == KE_EINVAL)
                return ka_send_status(c, 422, "Invalid", why, p->kind, p->name);
            return ka_send_error(c, rc, why, p->kind, p->name);
        }
        if (check_type(doc, p->kind, why, sizeof(why)) != 0 ||
            same_identity(doc, p, why, sizeof(why)) != 0 ||
            (p->kind->namespaced && (!ke_k8s_str(doc, "metadata.namespace") ||
                                     strcmp(ke_k8s_str(doc, "metadata.namespace"), ns) != 0))) {
            if (!why[0] || !strstr(why, "name"))
                snprintf(why, sizeof(why), "a patch cannot change the object's kind, apiVersion, "
                                           "name or namespace");
            json_decref(doc);
            json_decref(patch);
            return ka_send_status(c, 422, "Invalid", why, p->kind, p->name);
        }
        if (!pins_rv)
            json_object_set_new(json_object_get(doc, "metadata"), "resourceVersion",
                                json_string(rv));
        if (field_check(c, r, doc, warn, sizeof(warn), &res) != 0) {
            json_decref(doc);
            json_decref(patch);
            return res;
        }
        json_t *out = NULL;
        if (strcmp(p->sub, "status") == 0)
            rc = dry_run(r) ? (out = json_incref(doc), 0)
                            : ke_store_update_status(ka->cfg.store, doc, &out);
        else
            rc = edgecontroller_write(ka->cfg.ec, doc, EC_WRITE_UPDATE, dry_run(r), &out, why,
                                      sizeof(why));
        json_decref(doc);
        if (rc == KE_ECONFLICT && !pins_rv) {
            json_decref(out);
            continue; /* written in between: patch the new version */
        }
        if (rc == KE_ECONFLICT)
            snprintf(why, sizeof(why), "the object has been modified; please apply your changes "
                                       "to the latest version and try again");
        else if (rc != 0 && strcmp(p->sub, "status") == 0)
            snprintf(why, sizeof(why), "store: %s", ke_strerror(rc));
        json_decref(patch);
        return write_result(c, r, p, rc, out, why, p->name, 200, warn);
    }
    json_decref(patch);
    snprintf(why, sizeof(why), "the object kept changing while it was patched (%d tries); "
                               "patch again", KA_PATCH_TRIES);
    return ka_send_status(c, 409, "Conflict", why, p->kind, p->name);
}

/* delete_options reads DeleteOptions from the body (optional) and the
 * query: grace (-1 none), preconditions, dryRun. 0 or -1 after answering. */
typedef struct del_opts {
    int64_t grace; /* -1: none given */
    uint64_t rv;   /* precondition; 0 none */
    char uid[64];  /* precondition; "" none */
    int dry;
} del_opts;

static int delete_options(struct MHD_Connection *c, ka_req *r, del_opts *d,
                          enum MHD_Result *res)
{
    int64_t *grace = &d->grace;
    uint64_t *prv = &d->rv;
    char *uid = d->uid;
    size_t uidlen = sizeof(d->uid);
    int *dry = &d->dry;
    *grace = r->q.grace;
    *prv = 0;
    uid[0] = '\0';
    *dry = dry_run(r);
    if (!r->len)
        return 0;
    json_error_t je;
    json_t *o = json_loadb(r->body, r->len, 0, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        *res = ka_send_status(c, 400, "BadRequest", "the body must be DeleteOptions (JSON)", NULL,
                              NULL);
        return -1;
    }
    json_t *g = json_object_get(o, "gracePeriodSeconds");
    if (json_is_integer(g) && json_integer_value(g) >= 0)
        *grace = json_integer_value(g);
    const char *u = ke_k8s_str(o, "preconditions.uid");
    if (u)
        snprintf(uid, uidlen, "%s", u);
    const char *rv = ke_k8s_str(o, "preconditions.resourceVersion");
    if (rv)
        *prv = strtoull(rv, NULL, 10);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(o, "dryRun"), i, v)
        if (json_string_value(v) && strcmp(json_string_value(v), "All") == 0)
            *dry = 1;
    json_decref(o);
    return 0;
}

static enum MHD_Result do_delete(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                                 const ke_k8s_path *p, const char *ns)
{
    del_opts d;
    char why[700];
    enum MHD_Result res;
    if (delete_options(c, r, &d, &res) != 0)
        return res;
    json_t *out = NULL;
    int rc = edgecontroller_delete(ka->cfg.ec, p->kind, ns, p->name, d.grace, d.grace == 0, d.rv,
                                   d.uid[0] ? d.uid : NULL, d.dry, &out, why, sizeof(why));
    if (rc == 0)
        return ka_send_json(c, 200, out, NULL);
    json_decref(out);
    return write_error(c, p, rc, why, p->name);
}

static enum MHD_Result do_deletecollection(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                                           const ke_k8s_path *p, const char *ns)
{
    del_opts d;
    char why[700];
    enum MHD_Result res;
    if (delete_options(c, r, &d, &res) != 0)
        return res;
    if (ke_store_selector_check(r->q.label_selector, r->q.field_selector, why, sizeof(why)) != 0)
        return ka_send_status(c, 400, "BadRequest", why, p->kind, NULL);
    json_t *items = NULL;
    uint64_t rev = 0;
    char next[KE_STORE_CONTINUE_MAX];
    int rc = ke_store_list_page(ka->cfg.store, p->kind->kind, ns, r->q.label_selector,
                                r->q.field_selector, KA_DELETECOLLECTION_MAX, NULL, &items, &rev,
                                next, sizeof(next));
    if (rc != 0) {
        snprintf(why, sizeof(why), "list: %s", ke_strerror(rc));
        return ka_send_error(c, rc, why, p->kind, NULL);
    }
    json_t *done = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(items, i, o) {
        json_t *out = NULL;
        const char *ons = p->kind->namespaced ? ke_k8s_str(o, "metadata.namespace") : "";
        rc = edgecontroller_delete(ka->cfg.ec, p->kind, ons ? ons : "",
                                   ke_k8s_str(o, "metadata.name"), d.grace, d.grace == 0, 0, NULL,
                                   d.dry, &out, why, sizeof(why));
        if (rc == 0 && done)
            json_array_append_new(done, out);
        else
            json_decref(out);
        if (rc != 0 && rc != KE_ENOTFOUND) { /* gone already is what was asked */
            json_decref(items);
            json_decref(done);
            return ka_send_error(c, rc, why, p->kind, ke_k8s_str(o, "metadata.name"));
        }
    }
    json_decref(items);
    if (!done)
        return ka_send_json(c, 500, NULL, NULL);
    return ka_send_json(c, 200, ke_k8s_list(p->kind, done, ke_store_revision(ka->cfg.store), NULL),
                        NULL);
}

/* ---- routing ---- */

enum MHD_Result ka_serve_resource(kubeapi *ka, struct MHD_Connection *c, ka_req *r)
{
    if (ka_is_group_path(r->url))
        return ka_serve_group(ka, c, r);
    if (ka_is_crd_path(r->url))
        return ka_serve_crds(ka, c, r);
    ke_k8s_path p;
    char why[512];
    int rc = ke_k8s_path_parse(r->url, &p, why, sizeof(why));
    if (rc == KE_ENOTFOUND)
        return not_found_path(c);
    if (rc != 0 && p.kind && p.resource[0]) {
        /* a name or namespace no object can have: nothing is there (the
         * body of a create is what validation speaks about) */
        char msg[600];
        snprintf(msg, sizeof(msg), "%s \"%.200s\" not found", p.resource,
                 p.name[0] ? p.name : p.ns);
        return ka_send_status(c, 404, "NotFound", msg, p.kind, p.name);
    }
    if (rc != 0)
        return ka_send_status(c, 400, "BadRequest", why, NULL, NULL);
    if (r->query_rc != 0)
        return ka_send_status(c, 400, "BadRequest", r->query_why, p.kind, p.name);
    const ke_k8s_kind *k = p.kind;
    /* a namespaced kind names one object only within its namespace */
    if (k->namespaced && !p.ns_given && (p.name[0] || strcmp(r->method, "POST") == 0))
        return not_found_path(c);
    int is_log = strcmp(p.sub, "log") == 0 && strcmp(k->kind, "Pod") == 0;
    if (p.sub[0] && ((strcmp(p.sub, "status") != 0 && !is_log) || !p.name[0]))
        return not_found_path(c);
    if (is_log && strcmp(r->method, "GET") != 0)
        return method_not_allowed(c);
    const char *ns = k->namespaced ? p.ns : "";
    const char *m = r->method, *verb;
    int watch = 0;
    if (strcmp(m, "GET") == 0)
        verb = p.name[0] ? "get" : (watch = r->q.watch) ? "watch" : "list";
    else if (strcmp(m, "POST") == 0 && !p.name[0])
        verb = "create";
    else if (strcmp(m, "PUT") == 0 && p.name[0])
        verb = "update";
    else if (strcmp(m, "PATCH") == 0 && p.name[0])
        verb = "patch";
    else if (strcmp(m, "DELETE") == 0)
        verb = p.name[0] ? "delete" : "deletecollection";
    else
        return method_not_allowed(c);
    if (p.sub[0] && strcmp(verb, "delete") == 0)
        return method_not_allowed(c);
    int code = ke_authz_decide_request(ka->cfg.authz, &r->id, verb, k->kind, p.sub, ns, p.name,
                                       r->q.field_selector, why, sizeof(why));
    if (code != KE_RPC_OK) {
        char eu[KE_LOG_ESC_SIZE(KE_RPC_ID_NAME_MAX)], ew[KE_LOG_ESC_SIZE(512)];
        ke_log_warn(KA_MOD, "denied user=\"%s\" verb=%s resource=%s%s%s ns=%s name=%s "
                            "reason=\"%s\"",
                    ke_log_esc(r->id.user, eu, sizeof(eu)), verb, p.resource, p.sub[0] ? "/" : "",
                    p.sub, ns, p.name, ke_log_esc(why, ew, sizeof(ew)));
        return deny(c, code, why, &p);
    }
    if (is_log)
        return ka_serve_log(ka, c, r, &p, ns);
    if (strcmp(verb, "get") == 0)
        return do_get(ka, c, r, &p, ns);
    if (strcmp(verb, "list") == 0)
        return do_list(ka, c, r, &p, ns);
    if (watch)
        return ka_serve_watch(ka, c, r, &p, ns, ke_k8s_accepts_table(r->accept));
    if (strcmp(verb, "create") == 0)
        return do_create(ka, c, r, &p, ns);
    if (strcmp(verb, "update") == 0)
        return do_update(ka, c, r, &p, ns);
    if (strcmp(verb, "patch") == 0)
        return do_patch(ka, c, r, &p, ns);
    if (strcmp(verb, "delete") == 0)
        return do_delete(ka, c, r, &p, ns);
    return do_deletecollection(ka, c, r, &p, ns);
}
