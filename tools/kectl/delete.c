/*
 * delete.c — `kectl delete KIND NAME...`, `kectl delete KIND/NAME...` and
 * `kectl delete -f FILE|DIR|-`: one EdgeController.Delete per object,
 * printing kubectl's `pod "web" deleted`. With -f, the files are read and
 * checked first (manifest.c) and nothing is deleted when one is malformed.
 * A NOT_FOUND is reported and the others are still deleted (exit 1),
 * unless --ignore-not-found.
 */
#include "kectl.h"

#include "edgecontroller.pb-c.h"
#include "ke_err.h"

#include <string.h>

enum { OPT_IGNORE_NOT_FOUND = KECTL_OPT_VERB };

typedef struct delete_opts {
    const char *files[KECTL_MAX_FILES];
    size_t n_files;
    int ignore_not_found;
} delete_opts;

void kectl_help_delete(FILE *out)
{
    fputs("Delete objects by kind and name, or those described in files.\n"
          "\n"
          "Usage:\n"
          "  kectl delete KIND NAME [NAME...] [flags]\n"
          "  kectl delete KIND/NAME [KIND/NAME...] [flags]\n"
          "  kectl delete -f FILE|DIR|- [flags]\n"
          "\n"
          "KIND: pods (pod, po), configmaps (configmap, cm), secrets (secret), nodes (node,\n"
          "no), devices (device), devicemodels (devicemodel). Pods go away once their edge\n"
          "node confirms.\n"
          "\n"
          "Flags:\n"
          "  -f, --filename FILE      file, folder or - (stdin) naming the objects; may be\n"
          "                           repeated\n"
          "      --ignore-not-found   treat objects that do not exist as deleted\n"
          "\n"
          "Examples:\n"
          "  kectl delete pod web\n"
          "  kectl delete -f web.yaml\n"
          "  kectl delete device/thermometer -n plant-3\n"
          "\n",
          out);
    kectl_global_help(out);
}

static int delete_opt(void *ud, int c, const char *arg)
{
    delete_opts *o = ud;
    if (c == 'f') {
        if (o->n_files == KECTL_MAX_FILES)
            return kectl_usage_error("delete", "more than %d -f flags", KECTL_MAX_FILES);
        o->files[o->n_files++] = arg;
    } else if (c == OPT_IGNORE_NOT_FOUND) {
        o->ignore_not_found = 1;
    }
    return 0;
}

/* delete_one deletes one object. Returns 0, 1 for an error about it, -1
 * when the run must stop. */
static int delete_one(kectl *k, const kectl_kind *kind, const char *ns, const char *name,
                      const char *source, int ignore_not_found)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind->kind;
    ref.namespace_ = (char *)(kind->namespaced ? ns : "");
    ref.name = (char *)name;
    Ke__V1__DeleteRequest req = KE__V1__DELETE_REQUEST__INIT;
    req.ref = &ref;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    int rc = kectl_call(k, &ke__v1__edge_controller__descriptor, "Delete", &req.base, &reply, &st);
    if (rc != 0)
        return k->ch ? 1 : -1;
    if (st.code == KE_RPC_OK) {
        protobuf_c_message_free_unpacked(reply, NULL);
        printf("%s \"%s\" deleted\n", kind->singular, name);
        fflush(stdout);
        return 0;
    }
    if (st.code == KE_RPC_NOT_FOUND && ignore_not_found)
        return 0;
    char ctx[KECTL_NAME_MAX + 64] = "";
    if (source)
        snprintf(ctx, sizeof(ctx), "error when deleting \"%s\": ", source);
    kectl_report(k, &st, ctx, kind, name);
    return kectl_unreachable(&st) ? -1 : 1;
}

int kectl_cmd_delete(kectl *k, int argc, char **argv)
{
    static const struct option opts[] = {
        {"filename", required_argument, NULL, 'f'},
        {"ignore-not-found", no_argument, NULL, OPT_IGNORE_NOT_FOUND},
        {NULL, 0, NULL, 0},
    };
    static const kectl_verb_def def = {"delete", opts, "f:", delete_opt, kectl_help_delete};
    delete_opts o = {.n_files = 0};
    const char *pos[KECTL_MAX_ARGS];
    size_t n_pos;
    int rc = kectl_parse(k, &def, &o, argc, argv, pos, &n_pos);
    if (rc != 0)
        return rc == KECTL_HELP_SHOWN ? 0 : rc;
    int status = KECTL_EXIT_OK;
    if (o.n_files > 0) {
        if (n_pos > 0)
            return kectl_usage_error("delete", "give either -f or KIND NAME, not both");
        kectl_manifest m;
        if (kectl_manifest_load(k, "delete", o.files, o.n_files, &m) != 0)
            return KECTL_EXIT_ERROR;
        for (size_t i = 0; i < m.n; i++) {
            const kectl_manifest_obj *mo = &m.v[i];
            const char *ns = kectl_jstr(mo->obj, "metadata.namespace");
            int r = delete_one(k, mo->kind, ns ? ns : k->ns, kectl_jstr(mo->obj, "metadata.name"),
                               mo->source, o.ignore_not_found);
            if (r != 0)
                status = KECTL_EXIT_ERROR;
            if (r < 0)
                break;
        }
        kectl_manifest_free(&m);
        return status;
    }
    const kectl_kind *kind;
    kectl_target t[KECTL_MAX_ARGS];
    size_t n_t;
    if ((rc = kectl_targets("delete", pos, n_pos, &kind, t, &n_t)) != 0)
        return rc;
    if (n_t == 0)
        return kectl_usage_error("delete", "resource(s) were provided, but no name was specified");
    for (size_t i = 0; i < n_t; i++) {
        int r = delete_one(k, t[i].kind, k->ns, t[i].name, NULL, o.ignore_not_found);
        if (r != 0)
            status = KECTL_EXIT_ERROR;
        if (r < 0)
            break;
    }
    return status;
}
