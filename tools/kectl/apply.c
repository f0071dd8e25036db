/*
 * apply.c — `kectl apply -f FILE|DIR|-`: every object of the manifests goes
 * to EdgeController.Apply (devices too), one call each, after all of them
 * were read and checked (manifest.c), so that a syntax error applies
 * nothing.
 *
 * created / configured / unchanged: like kubectl, kectl reads the object
 * first. NOT_FOUND means the Apply creates it; otherwise the Apply
 * configures it, and when the stored metadata.resourceVersion did not move
 * the object was unchanged. When that read fails for another reason (a
 * server that cannot Get the kind), the line says "applied".
 *
 * A server error for one object is reported as kubectl does
 * (`Error from server (Invalid): error when applying "x.yaml": ...`) and
 * the other objects are still applied; the exit code is then 1. A server
 * that cannot be reached stops the whole run.
 */
#include "kectl.h"

#include "edgecontroller.pb-c.h"
#include "ke_err.h"

#include <stdlib.h>
#include <string.h>

enum { OPT_DRY_RUN = KECTL_OPT_VERB };

typedef struct apply_opts {
    const char *files[KECTL_MAX_FILES];
    size_t n_files;
    int dry_run;
    kectl_output out;
    int out_set;
} apply_opts;

void kectl_help_apply(FILE *out)
{
    fputs("Apply objects from files: create them, or update them when they exist.\n"
          "\n"
          "Usage: kectl apply -f FILE|DIR|- [-f ...] [flags]\n"
          "\n"
          "Every object goes to EdgeController.Apply, devices and device models too.\n"
          "Files are YAML (several documents separated by ---) or JSON; a folder means\n"
          "its *.yaml, *.yml and *.json files in name order; - reads stdin. A kind: List\n"
          "stands for its items. Objects without metadata.namespace get -n's (default\n"
          "\"default\"). Everything is read and checked first: a syntax error, shown as\n"
          "FILE:LINE:COL, applies nothing.\n"
          "\n"
          "Flags:\n"
          "  -f, --filename FILE     file, folder or - (stdin); may be repeated\n"
          "  -o, --output FORMAT     print the stored objects as json, yaml or name instead\n"
          "                          of \"pod/web created\" lines\n"
          "      --dry-run[=client]  read and check only; print what would be sent and send\n"
          "                          nothing (--dry-run=none is the default)\n"
          "\n"
          "Examples:\n"
          "  kectl apply -f web.yaml\n"
          "  kectl apply -f manifests/ -n shop-42\n"
          "  cat pod.json | kectl apply -f -\n"
          "\n",
          out);
    kectl_global_help(out);
}

static int apply_opt(void *ud, int c, const char *arg)
{
    apply_opts *o = ud;
    switch (c) {
    case 'f':
        if (o->n_files == KECTL_MAX_FILES)
            return kectl_usage_error("apply", "more than %d -f flags", KECTL_MAX_FILES);
        o->files[o->n_files++] = arg;
        return 0;
    case 'o':
        if (kectl_output_parse(arg, &o->out) != 0 || o->out == KECTL_OUT_WIDE)
            return kectl_usage_error("apply", "-o wants json, yaml or name, not \"%s\"", arg);
        o->out_set = 1;
        return 0;
    case OPT_DRY_RUN:
        if (!arg || strcmp(arg, "client") == 0)
            o->dry_run = 1;
        else if (strcmp(arg, "none") == 0)
            o->dry_run = 0;
        else
            return kectl_usage_error("apply", "--dry-run wants client or none, not \"%s\"", arg);
        return 0;
    }
    return 0;
}

/* rv_of copies metadata.resourceVersion (a string or a number) into buf. */
static void rv_of(const json_t *obj, char *buf, size_t len)
{
    json_t *rv = kectl_jget(obj, "metadata.resourceVersion");
    if (json_is_string(rv))
        snprintf(buf, len, "%s", json_string_value(rv));
    else if (json_is_integer(rv))
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(rv));
    else
        buf[0] = '\0';
}

typedef enum { PREV_UNKNOWN, PREV_ABSENT, PREV_EXISTS } prev_state;

/* apply_one applies one object. Returns 0, 1 for a server error about
 * this object, or -1 when the run must stop (server unreachable). The
 * stored object goes to *stored when requested. */
static int apply_one(kectl *k, const kectl_manifest_obj *mo, json_t **stored, const char **verb)
{
    const char *name = kectl_jstr(mo->obj, "metadata.name");
    const char *ns = mo->kind->namespaced ? kectl_jstr(mo->obj, "metadata.namespace") : "";
    ke_rpc_status st;
    json_t *prev = NULL;
    prev_state ps = PREV_UNKNOWN;
    char prev_rv[64] = "";
    int rc = kectl_fetch(k, mo->kind, ns ? ns : "", name, &prev, &st);
    if (rc != 0 && !k->ch)
        return -1; /* no channel: printed already */
    if (rc == 0 && st.code == KE_RPC_OK) {
        ps = PREV_EXISTS;
        rv_of(prev, prev_rv, sizeof(prev_rv));
    } else if (rc == 0 && st.code == KE_RPC_NOT_FOUND) {
        ps = PREV_ABSENT;
    } else if (rc == 0 && kectl_unreachable(&st)) {
        kectl_report(k, &st, "", NULL, NULL);
        return -1;
    }
    json_decref(prev);

    char *text = json_dumps(mo->obj, JSON_COMPACT);
    if (!text) {
        fprintf(stderr, "error: out of memory\n");
        return -1;
    }
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)text;
    req.object_json.len = strlen(text);
    ProtobufCMessage *reply = NULL;
    rc = kectl_call(k, &ke__v1__edge_controller__descriptor, "Apply", &req.base, &reply, &st);
    free(text);
    if (rc != 0)
        return k->ch ? 1 : -1;
    if (st.code != KE_RPC_OK) {
        char ctx[KECTL_NAME_MAX + 64];
        snprintf(ctx, sizeof(ctx), "error when applying \"%s\": ", mo->source);
        kectl_report(k, &st, ctx, NULL, NULL);
        return kectl_unreachable(&st) ? -1 : 1;
    }
    Ke__V1__ObjectReply *r = (Ke__V1__ObjectReply *)reply;
    json_error_t je;
    json_t *obj = json_loadb((const char *)r->object_json.data, r->object_json.len, 0, &je);
    protobuf_c_message_free_unpacked(reply, NULL);
    char new_rv[64] = "";
    if (obj)
        rv_of(obj, new_rv, sizeof(new_rv));
    *verb = ps == PREV_ABSENT   ? "created"
            : ps == PREV_EXISTS ? (prev_rv[0] && strcmp(prev_rv, new_rv) == 0 ? "unchanged"
                                                                                : "configured")
                                : "applied";
    if (stored)
        *stored = obj ? obj : json_incref(mo->obj);
    else
        json_decref(obj);
    return 0;
}

/* print_collected prints the objects for -o: one object alone, several as
 * a List (kubectl's way). */
static int print_collected(const json_t *objs, kectl_output out)
{
    if (out == KECTL_OUT_NAME || json_array_size(objs) != 1)
        return kectl_print_list(stdout, NULL, objs, out);
    return kectl_print_object(stdout, NULL, json_array_get(objs, 0), out);
}

int kectl_cmd_apply(kectl *k, int argc, char **argv)
{
    static const struct option opts[] = {
        {"filename", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, 'o'},
        {"dry-run", optional_argument, NULL, OPT_DRY_RUN},
        {NULL, 0, NULL, 0},
    };
    static const kectl_verb_def def = {"apply", opts, "f:o:", apply_opt, kectl_help_apply};
    apply_opts o = {.n_files = 0};
    const char *pos[KECTL_MAX_ARGS];
    size_t n_pos;
    int rc = kectl_parse(k, &def, &o, argc, argv, pos, &n_pos);
    if (rc != 0)
        return rc == KECTL_HELP_SHOWN ? 0 : rc;
    if (n_pos > 0)
        return kectl_usage_error("apply", "unexpected argument \"%s\": objects come from -f",
                                 pos[0]);
    if (o.n_files == 0)
        return kectl_usage_error("apply", "must specify -f FILE|DIR|-");

    kectl_manifest m;
    if (kectl_manifest_load(k, "apply", o.files, o.n_files, &m) != 0)
        return KECTL_EXIT_ERROR;
    json_t *collected = o.out_set ? json_array() : NULL;
    int status = KECTL_EXIT_OK;
    for (size_t i = 0; i < m.n; i++) {
        const kectl_manifest_obj *mo = &m.v[i];
        if (o.dry_run) {
            if (collected)
                json_array_append(collected, mo->obj);
            else
                printf("%s/%s checked (dry run)\n", mo->kind->singular,
                       kectl_jstr(mo->obj, "metadata.name"));
            continue;
        }
        json_t *stored = NULL;
        const char *verb = "applied";
        int r = apply_one(k, mo, collected ? &stored : NULL, &verb);
        if (r < 0) {
            status = KECTL_EXIT_ERROR;
            break;
        }
        if (r > 0) {
            status = KECTL_EXIT_ERROR;
            continue;
        }
        if (collected)
            json_array_append_new(collected, stored);
        else
            printf("%s/%s %s\n", mo->kind->singular, kectl_jstr(mo->obj, "metadata.name"), verb);
        fflush(stdout);
    }
    if (collected && json_array_size(collected) > 0 && print_collected(collected, o.out) != 0)
        status = KECTL_EXIT_ERROR;
    json_decref(collected);
    kectl_manifest_free(&m);
    return status;
}
