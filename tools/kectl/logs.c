/*
 * logs.c — `kectl logs POD [-c CONTAINER] [-f] [--tail N] [--limit-bytes N]`:
 * a pod's container log, read on the pod's edge node and streamed through
 * its tunnel (EdgeController.Logs). The bytes go to stdout as they arrive;
 * an error prints the server's message and exits 1.
 *
 * Threads: the stream's callbacks run on the rpc loop's thread and write
 * stdout there; the main thread waits on a self-pipe for the end of the
 * call or a signal (SIGINT/SIGTERM cancel the call: the server tells the
 * edge to stop; exit 0), as get -w does.
 */
#include "kectl.h"

#include "edgecontroller.pb-c.h"
#include "ke_err.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { OPT_TAIL = KECTL_OPT_VERB + 1, OPT_LIMIT_BYTES };

typedef struct logs_opts {
    const char *container;
    int follow;
    long long tail;  /* -1: all */
    long long limit; /* 0: none */
} logs_opts;

void kectl_help_logs(FILE *out)
{
    fputs("Print the log of a container of a pod, read on the edge node the pod runs on\n"
          "and streamed through the node's tunnel (nothing is kept in the cloud).\n"
          "\n"
          "Usage: kectl logs POD [-c CONTAINER] [-f] [--tail N] [--limit-bytes N] [flags]\n"
          "\n"
          "Flags:\n"
          "  -c, --container NAME  the container; may be left out when the pod has one\n"
          "  -f, --follow          keep streaming new lines until Ctrl-C\n"
          "      --tail N          only the last N lines (default -1: the whole log)\n"
          "      --limit-bytes N   stop after N bytes (default 0: no limit)\n"
          "\n"
          "The call has no deadline (--timeout does not apply). Needs RBAC get on\n"
          "pods/log in the pod's namespace. The node must be connected.\n"
          "\n"
          "Examples:\n"
          "  kectl logs web-0\n"
          "  kectl logs web-0 -c nginx --tail 20 -f -n shop\n"
          "\n",
          out);
    kectl_global_help(out);
}

static int logs_opt(void *ud, int c, const char *arg)
{
    logs_opts *o = ud;
    char *end = NULL;
    long long v;
    switch (c) {
    case 'c':
        o->container = arg;
        return 0;
    case 'f':
        o->follow = 1;
        return 0;
    case OPT_TAIL:
    case OPT_LIMIT_BYTES:
        errno = 0;
        v = strtoll(arg, &end, 10);
        if (end == arg || *end || errno)
            return kectl_usage_error("logs", "--%s wants a number, not \"%s\"",
                                     c == OPT_TAIL ? "tail" : "limit-bytes", arg);
        if (c == OPT_TAIL && v != -1 && v < 1)
            return kectl_usage_error("logs", "--tail must be -1 (the whole log) or at least 1");
        if (c == OPT_LIMIT_BYTES && v < 0)
            return kectl_usage_error("logs", "--limit-bytes must not be negative");
        if (c == OPT_TAIL)
            o->tail = v;
        else
            o->limit = v;
        return 0;
    default:
        return 0;
    }
}

typedef struct logs_ctx {
    int wake;
    int write_failed;
    ke_rpc_status st;
} logs_ctx;

static void logs_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    logs_ctx *c = ud;
    const Ke__V1__PodLogChunk *ch = (const Ke__V1__PodLogChunk *)msg;
    if (c->write_failed)
        return;
    if (fwrite(ch->data.data, 1, ch->data.len, stdout) != ch->data.len || fflush(stdout) != 0) {
        c->write_failed = 1;
        ke_rpc_call_cancel(call);
    }
}

static void logs_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    logs_ctx *c = ud;
    c->st = *st;
    char ch = 'c';
    ssize_t n = write(c->wake, &ch, 1);
    (void)n;
}

int kectl_cmd_logs(kectl *k, int argc, char **argv)
{
    static const struct option opts[] = {
        {"container", required_argument, NULL, 'c'},
        {"follow", no_argument, NULL, 'f'},
        {"tail", required_argument, NULL, OPT_TAIL},
        {"limit-bytes", required_argument, NULL, OPT_LIMIT_BYTES},
        {NULL, 0, NULL, 0},
    };
    static const kectl_verb_def def = {"logs", opts, "c:f", logs_opt, kectl_help_logs};
    logs_opts o = {.container = "", .tail = -1};
    const char *pos[KECTL_MAX_ARGS];
    size_t n_pos;
    int rc = kectl_parse(k, &def, &o, argc, argv, pos, &n_pos);
    if (rc != 0)
        return rc == KECTL_HELP_SHOWN ? 0 : rc;
    if (n_pos != 1)
        return kectl_usage_error("logs", n_pos ? "expected one pod name, got %zu arguments"
                                               : "a pod name is required%.0zu",
                                 n_pos);
    const char *pod = pos[0];
    if (strncmp(pod, "pod/", 4) == 0 || strncmp(pod, "pods/", 5) == 0)
        pod = strchr(pod, '/') + 1; /* kubectl accepts pod/NAME */
    if (kectl_connect(k) != 0)
        return KECTL_EXIT_ERROR;
    kectl_wake wk;
    if (kectl_wake_open(&wk) != 0)
        return KECTL_EXIT_ERROR;
    int *fds = wk.fds;
    logs_ctx c = {.wake = fds[1]};

    Ke__V1__PodLogRequest req = KE__V1__POD_LOG_REQUEST__INIT;
    req.namespace_ = (char *)k->ns;
    req.pod = (char *)pod;
    req.container = (char *)o.container;
    req.follow = o.follow;
    req.tail_lines = o.tail > 0 ? o.tail : 0;
    req.limit_bytes = o.limit;
    static const ke_rpc_handler h = {.on_message = logs_message, .on_close = logs_close};
    ke_rpc_stub stub = {k->ch, &ke__v1__edge_controller__descriptor};
    ke_rpc_call_opts co = {.timeout_ms = 0}; /* a log (-f above all) has no deadline */
    ke_rpc_call *call = NULL;
    int interrupted = 0, ended = 0;
    rc = ke_rpc_stub_start(&stub, "Logs", &h, &c, &co, &call);
    if (rc != 0) {
        fprintf(stderr, "error: cannot start the logs call: %s\n", ke_strerror(rc));
    } else {
        if (ke_rpc_call_send(call, &req.base) != 0 || ke_rpc_call_close_send(call) != 0)
            ke_rpc_call_cancel(call); /* its on_close says why */
        while (!ended) {
            char ch;
            ssize_t n = read(fds[0], &ch, 1);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0 || ch == 'c')
                ended = 1;
            else if (ch == 'i' && !interrupted) {
                interrupted = 1;
                ke_rpc_call_cancel(call); /* on_close follows */
            }
        }
        ke_rpc_call_unref(call);
    }
    kectl_wake_close(&wk);
    if (rc != 0)
        return KECTL_EXIT_ERROR;
    if (c.write_failed) {
        fprintf(stderr, "error: cannot write the log to stdout: %s\n", strerror(errno));
        return KECTL_EXIT_ERROR;
    }
    if (interrupted || c.st.code == KE_RPC_OK)
        return KECTL_EXIT_OK;
    if (c.st.code == KE_RPC_UNAVAILABLE && strncmp(c.st.message, "node ", 5) == 0) {
        /* the server answered: the pod's node is what is out of reach */
        fprintf(stderr, "Error from server (%s): %s\n", kectl_reason(c.st.code), c.st.message);
        return KECTL_EXIT_ERROR;
    }
    kectl_report(k, &c.st, "", kectl_kind_lookup("pods"), pod);
    return KECTL_EXIT_ERROR;
}
