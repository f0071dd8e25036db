/*
 * delete.c — `kectl delete KIND NAME...`, `kectl delete KIND/NAME...` and
 * `kectl delete -f FILE|DIR|-`: one EdgeController.Delete per object,
 * printing kubectl's `pod "web" deleted`. With -f, the files are read and
 * checked first (manifest.c) and nothing is deleted when one is malformed.
 * A NOT_FOUND is reported and the others are still deleted (exit 1),
 * unless --ignore-not-found. --force with --grace-period=0 (or none)
 * removes a pod from the store at once, without its node's confirmation
 * (for pods whose node is gone), as kubectl's.
 */
#include "kectl.h"

#include "edgecontroller.pb-c.h"
#include "ke_err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { OPT_IGNORE_NOT_FOUND = KECTL_OPT_VERB, OPT_FORCE, OPT_GRACE_PERIOD };

/* Largest --grace-period accepted (seconds; a year). */
#define KECTL_GRACE_MAX (365LL * 24 * 3600)

typedef struct delete_opts {
    const char *files[KECTL_MAX_FILES];
    size_t n_files;
    int ignore_not_found;
    int force;
    long long grace; /* -1: not given */
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
          "      --force              with --grace-period=0 (the default with --force):\n"
          "                           remove pods from the store at once, without waiting\n"
          "                           for their node to confirm (for a node that is gone);\n"
          "                           a node that comes back stops them on its next sync\n"
          "      --grace-period N     seconds a pod is given to stop (recorded on the pod);\n"
          "                           0 only with --force (without it, 0 means 1)\n"
          "\n"
          "Examples:\n"
          "  kectl delete pod web\n"
          "  kectl delete -f web.yaml\n"
          "  kectl delete device/thermometer -n plant-3\n"
          "  kectl delete pod web --force --grace-period=0\n"
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
    } else if (c == OPT_FORCE) {
        o->force = 1;
    } else if (c == OPT_GRACE_PERIOD) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(arg, &end, 10);
        if (!*arg || *end || errno || v < -1 || v > KECTL_GRACE_MAX)
            return kectl_usage_error("delete", "--grace-period wants seconds from 0 to %lld (-1: "
                                               "the default), not \"%s\"",
                                     KECTL_GRACE_MAX, arg);
        o->grace = v;
    }
    return 0;
}

/* delete_one deletes one object. Returns 0, 1 for an error about it, -1
 * when the run must stop. */
static int delete_one(kectl *k, const kectl_kind *kind, const char *ns, const char *name,
                      const char *source, const delete_opts *o)
{
    int ignore_not_found = o->ignore_not_found;
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind->kind;
    ref.namespace_ = (char *)(kind->namespaced ? ns : "");
    ref.name = (char *)name;
    Ke__V1__DeleteRequest req = KE__V1__DELETE_REQUEST__INIT;
    req.ref = &ref;
    /* kubectl's rules: --force alone is grace 0; 0 without --force is 1 */
    req.force = o->force;
    req.grace_period_seconds = o->grace >= 0 ? o->grace : 0;
    if (!o->force && o->grace == 0)
        req.grace_period_seconds = 1;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    int rc = kectl_call(k, &ke__v1__edge_controller__descriptor, "Delete", &req.base, &reply, &st);
    if (rc != 0)
        return k->ch ? 1 : -1;
    if (st.code == KE_RPC_OK) {
        protobuf_c_message_free_unpacked(reply, NULL);
        printf("%s \"%s\" %s\n", kind->singular, name,
               o->force && req.grace_period_seconds == 0 ? "force deleted" : "deleted");
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
        {"force", no_argument, NULL, OPT_FORCE},
        {"grace-period", required_argument, NULL, OPT_GRACE_PERIOD},
        {NULL, 0, NULL, 0},
    };
    static const kectl_verb_def def = {"delete", opts, "f:", delete_opt, kectl_help_delete};
    delete_opts o = {.n_files = 0, .grace = -1};
    const char *pos[KECTL_MAX_ARGS];
    size_t n_pos;
    int rc = kectl_parse(k, &def, &o, argc, argv, pos, &n_pos);
    if (rc != 0)
        return rc == KECTL_HELP_SHOWN ? 0 : rc;
    int status = KECTL_EXIT_OK;
    if (o.force && o.grace <= 0)
        fprintf(stderr, "warning: a forced deletion does not wait for the node to confirm that "
                        "the pod stopped; if its node comes back, the pod runs there until the "
                        "node syncs again\n");
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
                               mo->source, &o);
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
        int r = delete_one(k, t[i].kind, k->ns, t[i].name, NULL, &o);
        if (r != 0)
            status = KECTL_EXIT_ERROR;
        if (r < 0)
            break;
    }
    return status;
}
