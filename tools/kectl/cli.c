/*
 * cli.c — kectl's flag parsing. Global flags (--server, --ca, --cert,
 * --key, --timeout, -n, -A) may stand before the verb or among the verb's
 * own flags and arguments, as with kubectl: `kectl get pods -n kube-system`.
 * Each verb parses its argv once with its own option table merged with the
 * global one; a verb flag with the same letter as a global one wins (ping's
 * -n is its count).
 */
#include "kectl.h"

#include "ke_err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const struct option kectl_global_options[] = {
    {"server", required_argument, NULL, KECTL_OPT_SERVER},
    {"ca", required_argument, NULL, KECTL_OPT_CA},
    {"cert", required_argument, NULL, KECTL_OPT_CERT},
    {"key", required_argument, NULL, KECTL_OPT_KEY},
    {"timeout", required_argument, NULL, KECTL_OPT_TIMEOUT},
    {"kubeconfig", required_argument, NULL, KECTL_OPT_KUBECONFIG},
    {"namespace", required_argument, NULL, 'n'},
    {"all-namespaces", no_argument, NULL, 'A'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

#define GLOBAL_SHORTOPTS "n:Ah"

void kectl_global_help(FILE *out)
{
    fputs("Global flags (before or after the command):\n"
          "  --server HOST:PORT      cloudcore's gRPC address (default $KECTL_SERVER, else\n"
          "                          127.0.0.1:10000)\n"
          "  --ca FILE               CA certificate that signed the server's; enables TLS\n"
          "  --cert FILE             client certificate, for mutual TLS (keadm init writes\n"
          "                          admin.crt)\n"
          "  --key FILE              client private key, for mutual TLS\n"
          "  --kubeconfig FILE       client config (server, CA, certificate, key) as\n"
          "                          keadm certs user writes it (default\n"
          "                          $KECTL_KUBECONFIG); the flags above override it\n"
          "  --timeout MS            deadline of each call, in milliseconds (default 10000;\n"
          "                          get -w waits without one)\n"
          "  -n, --namespace NS      namespace of namespaced objects (default \"default\")\n"
          "  -A, --all-namespaces    every namespace (get, describe)\n"
          "  -h, --help              help; `kectl COMMAND --help` for a command's flags\n",
          out);
}

int kectl_usage_error(const char *verb, const char *fmt, ...)
{
    va_list ap;
    fputs("error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (verb)
        fprintf(stderr, "\nSee 'kectl %s --help' for usage.\n", verb);
    else
        fputs("\nSee 'kectl --help' for usage.\n", stderr);
    return KECTL_EXIT_USAGE;
}

int kectl_global_flag(kectl *k, int c, const char *arg)
{
    switch (c) {
    case KECTL_OPT_SERVER:
        if (!arg[0])
            return kectl_usage_error(NULL, "--server needs HOST:PORT");
        k->server = arg;
        k->server_flag = 1;
        return 1;
    case KECTL_OPT_KUBECONFIG:
        if (!arg[0])
            return kectl_usage_error(NULL, "--kubeconfig needs a FILE");
        k->kubeconfig = arg;
        return 1;
    case KECTL_OPT_CA:
        k->tls.ca_file = arg;
        k->use_tls = 1;
        return 1;
    case KECTL_OPT_CERT:
        k->tls.cert_file = arg;
        k->use_tls = 1;
        return 1;
    case KECTL_OPT_KEY:
        k->tls.key_file = arg;
        k->use_tls = 1;
        return 1;
    case KECTL_OPT_TIMEOUT: {
        char *end = NULL;
        errno = 0;
        long long ms = strtoll(arg, &end, 10);
        if (errno != 0 || end == arg || *end != '\0' || ms <= 0 || ms > 86400000LL)
            return kectl_usage_error(NULL, "--timeout wants milliseconds, 1..86400000, not \"%s\"",
                                     arg);
        k->timeout_ms = ms;
        return 1;
    }
    case 'n':
        if (!arg[0] || strlen(arg) > KECTL_NAME_MAX)
            return kectl_usage_error(NULL, "-n wants a namespace name, not \"%s\"", arg);
        k->ns = arg;
        k->ns_explicit = 1;
        return 1;
    case 'A':
        k->all_ns = 1;
        return 1;
    default:
        return 0;
    }
}

static int verb_has_short(const kectl_verb_def *d, int c)
{
    return c > 0 && c < 0x100 && d->shortopts && strchr(d->shortopts, c) && c != ':';
}

int kectl_parse(kectl *k, const kectl_verb_def *d, void *ud, int argc, char **argv,
                const char **pos, size_t *n_pos)
{
    struct option opts[KECTL_MAX_OPTS];
    size_t n = 0;
    for (const struct option *o = d->opts; o && o->name && n < KECTL_MAX_OPTS - 1; o++)
        opts[n++] = *o;
    size_t n_verb = n; /* opts[0..n_verb) are the verb's own long options */
    for (const struct option *o = kectl_global_options; o->name && n < KECTL_MAX_OPTS - 1; o++) {
        int shadowed = 0;
        for (size_t i = 0; i < n; i++)
            shadowed |= strcmp(opts[i].name, o->name) == 0;
        if (!shadowed)
            opts[n++] = *o;
    }
    memset(&opts[n], 0, sizeof(opts[n]));

    /* ':' first: missing arguments come back as ':'; no "+": flags may
     * follow positional arguments. The verb's letters go first so that
     * they win over a global letter. */
    char shortopts[96];
    size_t sl = 0;
    shortopts[sl++] = ':';
    const char *vs = d->shortopts ? d->shortopts : "";
    for (size_t i = 0; vs[i] && sl < sizeof(shortopts) - 1; i++)
        shortopts[sl++] = vs[i];
    for (const char *g = GLOBAL_SHORTOPTS; *g && sl < sizeof(shortopts) - 2; g++) {
        if (*g == ':')
            continue;
        if (strchr(vs, *g))
            continue;
        shortopts[sl++] = *g;
        if (g[1] == ':')
            shortopts[sl++] = ':';
    }
    shortopts[sl] = '\0';

    *n_pos = 0;
    optind = 0; /* GNU: full re-initialisation */
    opterr = 0;
    int c, li = -1;
    while ((c = getopt_long(argc, argv, shortopts, opts, &li)) != -1) {
        /* a long option is the verb's or a global one by where it matched
         * (ping's --count and the global --namespace both map to 'n') */
        int is_verb = li >= 0 ? (size_t)li < n_verb : verb_has_short(d, c);
        li = -1;
        if (c == '?') {
            if (optopt && optopt < 0x100)
                return kectl_usage_error(d->name, "unknown shorthand flag: '%c' in -%c", optopt,
                                         optopt);
            return kectl_usage_error(d->name, "unknown flag: %s", argv[optind - 1]);
        }
        if (c == ':')
            return kectl_usage_error(d->name, "flag needs an argument: %s", argv[optind - 1]);
        if (is_verb) {
            int rc = d->on_opt ? d->on_opt(ud, c, optarg) : 0;
            if (rc != 0)
                return rc;
            continue;
        }
        if (c == 'h') {
            d->help(stdout);
            return KECTL_HELP_SHOWN;
        }
        int g = kectl_global_flag(k, c, optarg);
        if (g == KECTL_EXIT_USAGE)
            return g;
        if (g == 0)
            return kectl_usage_error(d->name, "unknown flag: %s", argv[optind - 1]);
    }
    for (int i = optind; i < argc; i++) {
        if (*n_pos == KECTL_MAX_ARGS)
            return kectl_usage_error(d->name, "more than %d arguments", KECTL_MAX_ARGS);
        pos[(*n_pos)++] = argv[i];
    }
    return 0;
}

static int unknown_kind(const char *name)
{
    fprintf(stderr, "error: the server doesn't have a resource type \"%s\"\n", name);
    return KECTL_EXIT_ERROR;
}

int kectl_targets(const char *verb, const char *const *pos, size_t n_pos, const kectl_kind **kind,
                  kectl_target *targets, size_t *n_targets)
{
    *n_targets = 0;
    *kind = NULL;
    if (n_pos == 0)
        return kectl_usage_error(verb, "you must specify the type of resource to %s", verb);
    if (!strchr(pos[0], '/')) {
        if (!(*kind = kectl_kind_lookup(pos[0])))
            return unknown_kind(pos[0]);
        for (size_t i = 1; i < n_pos; i++) {
            if (strchr(pos[i], '/'))
                return kectl_usage_error(verb, "there is no need to specify a resource type as a "
                                               "separate argument when passing arguments in "
                                               "resource/name form");
            if (!pos[i][0] || strlen(pos[i]) > KECTL_NAME_MAX)
                return kectl_usage_error(verb, "\"%s\" is not an object name", pos[i]);
            targets[(*n_targets)++] = (kectl_target){*kind, pos[i]};
        }
        return 0;
    }
    for (size_t i = 0; i < n_pos; i++) {
        const char *slash = strchr(pos[i], '/');
        if (!slash || !slash[1] || strchr(slash + 1, '/') || strlen(slash + 1) > KECTL_NAME_MAX)
            return kectl_usage_error(verb, "arguments in resource/name form must have a single "
                                           "resource and name, not \"%s\"",
                                     pos[i]);
        char kname[128];
        snprintf(kname, sizeof(kname), "%.*s", (int)(slash - pos[i]), pos[i]);
        const kectl_kind *kk = kectl_kind_lookup(kname);
        if (!kk)
            return unknown_kind(kname);
        if (i == 0)
            *kind = kk;
        targets[(*n_targets)++] = (kectl_target){kk, slash + 1};
    }
    return 0;
}
