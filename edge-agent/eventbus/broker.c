/*
 * broker.c — the internal broker's supervisor (broker.h).
 *
 * States: RUNNING (a process is up: proc set) --exit--> WAITING (the
 * restart timer runs) --timer--> RUNNING ...; stop from either goes to
 * STOPPING: SIGTERM (and the kill timer) when a process is up, then the
 * handles are closed and on_stopped runs after the last close callback.
 * Each spawn has its own malloc'd uv_process_t, freed by its close
 * callback, so a restart never waits on a close.
 *
 * A broker left running by an edgecore that was killed (SIGKILL, a crash:
 * nothing stopped it) still holds the port. Its pid is in <dir>/broker.pid;
 * at start, when that process is still a broker of this config (its
 * /proc/<pid>/cmdline has our config's path), it gets SIGTERM (SIGKILL
 * after EVENTBUS_BROKER_KILL_MS) and the first spawn waits for it to go
 * (REAPING, polled every EVENTBUS_BROKER_POLL_MS: it is not our child, so
 * there is no exit callback).
 */
#include "broker.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_time.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BR_MOD "eventbus"
#define EVENTBUS_BROKER_POLL_MS 50
#define EVENTBUS_BROKER_LOG_CHECK_MS 60000

typedef enum { BR_NEW, BR_REAPING, BR_RUNNING, BR_WAITING, BR_STOPPING } br_state;

struct eventbus_broker {
    uv_loop_t *loop;
    char binary[1024], dir[3800], conf[4096], log[4096], pidfile[4096], host[256];
    int stale_pid;          /* REAPING: the broker an earlier edgecore left */
    int stale_killed;       /* SIGKILL sent to it */
    int64_t stale_deadline; /* monotonic ms */
    int port;
    int64_t backoff_max_ms, backoff_ms;
    br_state state;
    uv_process_t *proc; /* the running broker, or NULL */
    int pid;
    int64_t started_at;  /* monotonic ms of the current run */
    int64_t restart_at;  /* monotonic ms of the next spawn while WAITING */
    uint64_t restarts;
    char last_exit[96];
    unsigned seed;
    uv_timer_t restart, kill, logcheck;
    int timers_inited;
    int closing; /* close callbacks to come */
    int finishing;
    void (*on_stopped)(void *arg);
    void *stopped_arg;
    ke_metric *m_restarts;
};

int eventbus_broker_new(uv_loop_t *loop, const eventbus_broker_config *cfg,
                        eventbus_broker **out)
{
    *out = NULL;
    if (!cfg->binary || !cfg->dir || !cfg->host || cfg->port < 1 || cfg->port > 65535)
        return KE_EINVAL;
    eventbus_broker *b = calloc(1, sizeof(*b));
    if (!b)
        return KE_ENOMEM;
    b->loop = loop;
    b->port = cfg->port;
    if ((size_t)snprintf(b->binary, sizeof(b->binary), "%s", cfg->binary) >= sizeof(b->binary) ||
        (size_t)snprintf(b->dir, sizeof(b->dir), "%s", cfg->dir) >= sizeof(b->dir) ||
        (size_t)snprintf(b->host, sizeof(b->host), "%s", cfg->host) >= sizeof(b->host)) {
        free(b);
        return KE_EINVAL;
    }
    snprintf(b->conf, sizeof(b->conf), "%s/mosquitto.conf", b->dir);
    snprintf(b->log, sizeof(b->log), "%s/mosquitto.log", b->dir);
    snprintf(b->pidfile, sizeof(b->pidfile), "%s/broker.pid", b->dir);
    b->backoff_max_ms = cfg->backoff_max_ms < EVENTBUS_BROKER_BACKOFF_MS
                            ? EVENTBUS_BROKER_BACKOFF_MS
                            : cfg->backoff_max_ms;
    b->backoff_ms = EVENTBUS_BROKER_BACKOFF_MS;
    b->seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)ke_time_mono_ms();
    *out = b;
    return 0;
}

static int write_conf(eventbus_broker *b)
{
    if (mkdir(b->dir, 0700) != 0 && errno != EEXIST) {
        ke_log_error(BR_MOD, "internal broker: cannot make %s: %s", b->dir, strerror(errno));
        return KE_EIO;
    }
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", b->conf);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        ke_log_error(BR_MOD, "internal broker: cannot write %s: %s", tmp, strerror(errno));
        return KE_EIO;
    }
    fprintf(f,
            "# written by edgecore at every start (modules.eventbus.mode: internal): "
            "do not edit\n"
            "listener %d %s\n"
            "allow_anonymous true\n"
            "persistence true\n"
            "persistence_location %s/\n"
            "log_dest file %s\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n",
            b->port, b->host, b->dir, b->log);
    /* as root, mosquitto would switch to user "mosquitto", who cannot
     * write this directory: stay root then (no name lookup on the loop) */
    if (geteuid() == 0)
        fprintf(f, "user root\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, b->conf) != 0) {
        ke_log_error(BR_MOD, "internal broker: cannot write %s: %s", b->conf, strerror(errno));
        unlink(tmp);
        return KE_EIO;
    }
    return 0;
}

static void spawn(eventbus_broker *b);

/* write_pidfile records the running broker's pid for the next edgecore
 * (see the top comment); a failure costs only that clean-up. */
static void write_pidfile(eventbus_broker *b)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", b->pidfile);
    FILE *f = fopen(tmp, "w");
    int ok = f && fprintf(f, "%d\n", b->pid) > 0;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, b->pidfile) != 0) {
        ke_log_warn(BR_MOD, "internal broker: cannot write %s: %s", b->pidfile, strerror(errno));
        unlink(tmp);
    }
}

/* is_our_broker: is pid alive and a broker of this config? (A zombie's
 * cmdline is empty: gone.) */
static int is_our_broker(const eventbus_broker *b, int pid)
{
    char path[64], buf[8192];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
        if (strcmp(buf + i, b->conf) == 0)
            return 1;
    return 0;
}

/* on_reap_poll: REAPING: the earlier broker gone, start ours. */
static void on_reap_poll(uv_timer_t *t)
{
    eventbus_broker *b = t->data;
    if (b->state != BR_REAPING)
        return;
    if (!is_our_broker(b, b->stale_pid)) {
        ke_log_info(BR_MOD, "internal broker left by an earlier edgecore has stopped pid=%d",
                    b->stale_pid);
        uv_timer_stop(&b->kill);
        spawn(b);
        return;
    }
    if (ke_time_mono_ms() < b->stale_deadline)
        return;
    if (!b->stale_killed) {
        ke_log_warn(BR_MOD, "internal broker left by an earlier edgecore pid=%d still running "
                            "%dms after SIGTERM: SIGKILL",
                    b->stale_pid, EVENTBUS_BROKER_KILL_MS);
        if (kill(b->stale_pid, SIGKILL) != 0 && errno != ESRCH)
            ke_log_warn(BR_MOD, "SIGKILL pid=%d: %s", b->stale_pid, strerror(errno));
        b->stale_killed = 1;
        b->stale_deadline = ke_time_mono_ms() + EVENTBUS_BROKER_KILL_MS;
        return;
    }
    ke_log_error(BR_MOD, "internal broker left by an earlier edgecore pid=%d does not end: "
                         "starting ours anyway",
                 b->stale_pid);
    uv_timer_stop(&b->kill);
    spawn(b);
}

/* stop_stale: 1 when a broker an earlier edgecore left is being stopped
 * (REAPING), 0 when there is none. */
static int stop_stale(eventbus_broker *b)
{
    FILE *f = fopen(b->pidfile, "r");
    int pid = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%d", &pid) != 1)
        pid = 0;
    fclose(f);
    if (pid <= 1 || pid == (int)getpid() || !is_our_broker(b, pid))
        return 0;
    ke_log_warn(BR_MOD, "internal broker left by an earlier edgecore is running pid=%d: "
                        "stopping it before starting ours",
                pid);
    if (kill(pid, SIGTERM) != 0) {
        ke_log_warn(BR_MOD, "SIGTERM pid=%d: %s", pid, strerror(errno));
        if (errno == ESRCH)
            return 0;
    }
    b->stale_pid = pid;
    b->stale_deadline = ke_time_mono_ms() + EVENTBUS_BROKER_KILL_MS;
    b->state = BR_REAPING;
    uv_timer_start(&b->kill, on_reap_poll, EVENTBUS_BROKER_POLL_MS, EVENTBUS_BROKER_POLL_MS);
    return 1;
}

static void on_restart(uv_timer_t *t)
{
    eventbus_broker *b = t->data;
    if (b->state != BR_WAITING)
        return;
    b->restarts++;
    ke_metric_add(b->m_restarts, 1);
    spawn(b);
}

/* wait_and_restart: the broker is not running; spawn it again after the
 * back-off (jittered: between half and all of it). */
static void wait_and_restart(eventbus_broker *b)
{
    int64_t base = b->backoff_ms;
    int64_t delay = base / 2 + (int64_t)(rand_r(&b->seed) % (unsigned)(base / 2 + 1));
    b->backoff_ms = base * 2 > b->backoff_max_ms ? b->backoff_max_ms : base * 2;
    b->state = BR_WAITING;
    b->restart_at = ke_time_mono_ms() + delay;
    ke_log_warn(BR_MOD, "internal broker: restart in %" PRId64 "ms (restarts so far %" PRIu64
                        ", log %s)",
                delay, b->restarts, b->log);
    uv_timer_start(&b->restart, on_restart, (uint64_t)delay, 0);
}

static void proc_closed(uv_handle_t *h);
static void finish(eventbus_broker *b);

static void broker_exited(uv_process_t *p, int64_t status, int sig)
{
    eventbus_broker *b = p->data;
    int pid = b->pid;
    int64_t ran = ke_time_mono_ms() - b->started_at;
    if (sig)
        snprintf(b->last_exit, sizeof(b->last_exit), "pid %d killed by signal %d", pid, sig);
    else
        snprintf(b->last_exit, sizeof(b->last_exit), "pid %d exit status %" PRId64, pid, status);
    b->proc = NULL;
    b->pid = 0;
    b->closing++;
    uv_close((uv_handle_t *)p, proc_closed);
    if (b->state == BR_STOPPING) {
        uv_timer_stop(&b->kill);
        if (sig || status)
            ke_log_warn(BR_MOD, "internal broker stopped: %s", b->last_exit);
        else
            ke_log_info(BR_MOD, "internal broker stopped pid=%d", pid);
        if (unlink(b->pidfile) != 0 && errno != ENOENT)
            ke_log_warn(BR_MOD, "internal broker: cannot remove %s: %s", b->pidfile,
                        strerror(errno));
        finish(b);
        return;
    }
    ke_log_warn(BR_MOD, "internal broker exited: %s after %" PRId64 "ms", b->last_exit, ran);
    if (ran >= EVENTBUS_BROKER_STABLE_MS)
        b->backoff_ms = EVENTBUS_BROKER_BACKOFF_MS;
    wait_and_restart(b);
}

/* cloexec_all marks every descriptor of edgecore but stdio close-on-exec:
 * libraries open some without it (the HTTP server's listener, a pipe),
 * and the broker, which outlives an edgecore that is SIGKILLed, must not
 * hold them (the next edgecore could not bind its port). uv_spawn runs no
 * code of ours in the child, so it is done here, before each spawn. */
static void cloexec_all(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        ke_log_warn(BR_MOD, "internal broker: /proc/self/fd: %s (descriptors may leak to it)",
                    strerror(errno));
        return;
    }
    int dfd = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        int fd = atoi(de->d_name);
        if (fd <= 2 || fd == dfd)
            continue;
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0 && !(fl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fl | FD_CLOEXEC) != 0)
            ke_log_warn(BR_MOD, "internal broker: fd %d close-on-exec: %s", fd, strerror(errno));
    }
    closedir(d);
}

/* rotate_log: mosquitto.log past EVENTBUS_BROKER_LOG_MAX becomes
 * mosquitto.log.1 (the one before is dropped); a running broker is told
 * with SIGHUP, on which mosquitto reopens its log file (and reads its
 * config again: ours, unchanged). */
static void rotate_log(eventbus_broker *b)
{
    struct stat st;
    if (stat(b->log, &st) != 0 || st.st_size <= EVENTBUS_BROKER_LOG_MAX)
        return;
    char old[4200];
    snprintf(old, sizeof(old), "%s.1", b->log);
    if (rename(b->log, old) != 0) {
        ke_log_warn(BR_MOD, "internal broker: cannot rotate %s: %s", b->log, strerror(errno));
        return;
    }
    if (b->proc) {
        int rc = uv_process_kill(b->proc, SIGHUP);
        if (rc != 0)
            ke_log_warn(BR_MOD, "internal broker pid=%d: SIGHUP: %s", b->pid, uv_strerror(rc));
    }
}

static void on_logcheck(uv_timer_t *t) { rotate_log(t->data); }

static void spawn(eventbus_broker *b)
{
    cloexec_all();
    rotate_log(b);
    int fd = open(b->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(b->last_exit, sizeof(b->last_exit), "cannot open its log: %s", strerror(errno));
        ke_log_error(BR_MOD, "internal broker: cannot open %s: %s", b->log, strerror(errno));
        wait_and_restart(b);
        return;
    }
    uv_process_t *p = calloc(1, sizeof(*p));
    if (!p) {
        close(fd);
        snprintf(b->last_exit, sizeof(b->last_exit), "out of memory");
        wait_and_restart(b);
        return;
    }
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = fd},
        {.flags = UV_INHERIT_FD, .data.fd = fd},
    };
    char *args[] = {b->binary, "-c", b->conf, NULL};
    uv_process_options_t o = {.exit_cb = broker_exited,
                              .file = b->binary,
                              .args = args,
                              .stdio_count = 3,
                              .stdio = stdio};
    p->data = b;
    int rc = uv_spawn(b->loop, p, &o);
    if (close(fd) != 0)
        ke_log_warn(BR_MOD, "internal broker: closing its log: %s", strerror(errno));
    if (rc != 0) {
        snprintf(b->last_exit, sizeof(b->last_exit), "cannot start it: %s",
                 uv_strerror(rc));
        ke_log_error(BR_MOD, "internal broker: cannot start %s: %s", b->binary, uv_strerror(rc));
        b->closing++;
        uv_close((uv_handle_t *)p, proc_closed); /* libuv: close it even so */
        wait_and_restart(b);
        return;
    }
    b->proc = p;
    b->pid = p->pid;
    b->started_at = ke_time_mono_ms();
    b->state = BR_RUNNING;
    write_pidfile(b);
    ke_log_info(BR_MOD, "internal broker started pid=%d listener=%s:%d conf=%s", b->pid, b->host,
                b->port, b->conf);
}

int eventbus_broker_start(eventbus_broker *b)
{
    if (b->state != BR_NEW)
        return KE_EINVAL;
    int rc = write_conf(b);
    if (rc != 0)
        return rc;
    rc = ke_metrics_counter_new("ke_eventbus_broker_restarts_total",
                                "internal broker restarts after it exited", NULL,
                                &b->m_restarts);
    if (rc != 0)
        ke_log_warn(BR_MOD, "no ke_eventbus_broker_restarts_total metric: %s", ke_strerror(rc));
    uv_timer_init(b->loop, &b->restart);
    uv_timer_init(b->loop, &b->kill);
    uv_timer_init(b->loop, &b->logcheck);
    b->restart.data = b;
    b->kill.data = b;
    b->logcheck.data = b;
    b->timers_inited = 1;
    uv_timer_start(&b->logcheck, on_logcheck, EVENTBUS_BROKER_LOG_CHECK_MS,
                   EVENTBUS_BROKER_LOG_CHECK_MS);
    if (!stop_stale(b))
        spawn(b);
    return 0;
}

static void proc_closed(uv_handle_t *h)
{
    eventbus_broker *b = h->data;
    free(h);
    if (--b->closing == 0 && b->finishing && b->on_stopped)
        b->on_stopped(b->stopped_arg);
}

static void timer_closed(uv_handle_t *h)
{
    eventbus_broker *b = h->data;
    if (--b->closing == 0 && b->finishing && b->on_stopped)
        b->on_stopped(b->stopped_arg);
}

/* finish: no process left: close the timers; on_stopped at the last close. */
static void finish(eventbus_broker *b)
{
    b->finishing = 1;
    uv_timer_stop(&b->restart);
    uv_timer_stop(&b->kill);
    uv_timer_stop(&b->logcheck);
    b->closing += 3;
    uv_close((uv_handle_t *)&b->restart, timer_closed);
    uv_close((uv_handle_t *)&b->kill, timer_closed);
    uv_close((uv_handle_t *)&b->logcheck, timer_closed);
}

static void on_kill(uv_timer_t *t)
{
    eventbus_broker *b = t->data;
    if (!b->proc)
        return;
    ke_log_warn(BR_MOD, "internal broker pid=%d still running %dms after SIGTERM: SIGKILL",
                b->pid, EVENTBUS_BROKER_KILL_MS);
    int rc = uv_process_kill(b->proc, SIGKILL);
    if (rc != 0) /* gone meanwhile: its exit callback is on its way */
        ke_log_warn(BR_MOD, "internal broker pid=%d: SIGKILL: %s", b->pid, uv_strerror(rc));
}

void eventbus_broker_stop(eventbus_broker *b, void (*on_stopped)(void *arg), void *arg)
{
    b->on_stopped = on_stopped;
    b->stopped_arg = arg;
    br_state was = b->state;
    b->state = BR_STOPPING;
    if (was == BR_NEW || !b->timers_inited) {
        /* never started: nothing to close; still never inside this call */
        b->finishing = 1;
        b->closing++;
        uv_timer_init(b->loop, &b->restart);
        b->restart.data = b;
        uv_close((uv_handle_t *)&b->restart, timer_closed);
        return;
    }
    uv_timer_stop(&b->restart);
    if (b->proc) {
        ke_log_info(BR_MOD, "stopping the internal broker pid=%d", b->pid);
        int rc = uv_process_kill(b->proc, SIGTERM);
        if (rc != 0)
            ke_log_warn(BR_MOD, "internal broker pid=%d: SIGTERM: %s", b->pid, uv_strerror(rc));
        uv_timer_start(&b->kill, on_kill, EVENTBUS_BROKER_KILL_MS, 0);
        return; /* on_exit finishes */
    }
    finish(b);
}

void eventbus_broker_free(eventbus_broker *b) { free(b); }

void eventbus_broker_detail(const eventbus_broker *b, char *out, size_t cap)
{
    if (b->proc) {
        snprintf(out, cap, "broker pid=%d restarts=%" PRIu64, b->pid, b->restarts);
        return;
    }
    if (b->state == BR_REAPING) {
        snprintf(out, cap, "broker starting: waiting for pid=%d (left by an earlier edgecore) "
                           "to stop", b->stale_pid);
        return;
    }
    int64_t left = b->state == BR_WAITING ? b->restart_at - ke_time_mono_ms() : 0;
    snprintf(out, cap, "broker down (%s), restart in %llds restarts=%" PRIu64,
             b->last_exit[0] ? b->last_exit : "-",
             (long long)(left > 0 ? (left + 999) / 1000 : 0), b->restarts);
}
