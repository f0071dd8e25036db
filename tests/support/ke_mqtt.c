/*
 * ke_mqtt.c — a private mosquitto for tests (ke_mqtt.h).
 */
#include "ke_mqtt.h"

#include "ke_time.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int ke_mqtt_available(void)
{
    return access(KE_MQTT_BROKER, X_OK) == 0 &&
           ke_tp_sh("command -v mosquitto_pub >/dev/null") == 0;
}

int ke_mqtt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

void ke_mqtt_restart(ke_mqtt *b)
{
    assert_false(b->running);
    char *argv[] = {KE_MQTT_BROKER, "-c", b->conf, NULL};
    assert_int_equal(ke_tp_start_log(&b->proc, argv, b->log), 0);
    b->running = 1;
    /* ready when the port accepts (a port just freed may take a moment) */
    int64_t until = ke_time_mono_ms() + 10000;
    while (!port_accepts(b->port)) {
        if (ke_time_mono_ms() > until) {
            ke_tp_sh("tail -20 %s >&2", b->log);
            fail_msg("mosquitto does not accept on port %d", b->port);
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void ke_mqtt_start(ke_mqtt *b, const char *dir, int port) { ke_mqtt_start_opts(b, dir, port, NULL); }

void ke_mqtt_start_opts(ke_mqtt *b, const char *dir, int port, const ke_mqtt_opts *o)
{
    static const ke_mqtt_opts none;
    if (!o)
        o = &none;
    memset(b, 0, sizeof(*b));
    snprintf(b->dir, sizeof(b->dir), "%s", dir);
    snprintf(b->conf, sizeof(b->conf), "%s/mosquitto.conf", dir);
    snprintf(b->log, sizeof(b->log), "%s/mosquitto.log", dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", dir, strerror(errno));
    b->port = port ? port : ke_mqtt_free_port();
    assert_true(b->port > 0);
    FILE *f = fopen(b->conf, "w");
    assert_non_null(f);
    fprintf(f,
            "listener %d 127.0.0.1\n"
            "allow_anonymous %s\n"
            "persistence true\n"
            "persistence_location %s/\n"
            "log_dest stderr\n"
            "log_type all\n"
            "connection_messages true\n",
            b->port, o->user ? "false" : "true", dir);
    if (o->user) {
        assert_non_null(o->password);
        snprintf(b->user, sizeof(b->user), "%s", o->user);
        snprintf(b->password, sizeof(b->password), "%s", o->password);
        /* the test's own names and passwords: no quote in them */
        if (ke_tp_sh("mosquitto_passwd -b -c %s/passwd '%s' '%s' >>%s/pub.log 2>&1", dir, o->user,
                     o->password, dir) != 0)
            fail_msg("mosquitto_passwd failed (see %s/pub.log)", dir);
        fprintf(f, "password_file %s/passwd\n", dir);
    }
    if (o->cafile) {
        assert_non_null(o->certfile);
        assert_non_null(o->keyfile);
        snprintf(b->cafile, sizeof(b->cafile), "%s", o->cafile);
        fprintf(f, "cafile %s\ncertfile %s\nkeyfile %s\n", o->cafile, o->certfile, o->keyfile);
    }
    /* run as root, mosquitto would switch to user "mosquitto", which cannot
     * write the test's directory: stay who we are */
    struct passwd *pw = getpwuid(getuid());
    if (pw)
        fprintf(f, "user %s\n", pw->pw_name);
    assert_int_equal(fclose(f), 0);
    ke_mqtt_restart(b);
}

int ke_mqtt_stop(ke_mqtt *b)
{
    if (!b->running)
        return 0;
    b->running = 0;
    return ke_tp_stop(&b->proc);
}

int ke_mqtt_pub(const ke_mqtt *b, const char *topic, const char *payload)
{
    /* single quotes: the topic, payload and credentials are the test's own
     * (no quote in them) */
    char auth[200] = "", tls[340] = "";
    if (b->user[0])
        snprintf(auth, sizeof(auth), "-u '%s' -P '%s'", b->user, b->password);
    if (b->cafile[0])
        snprintf(tls, sizeof(tls), "--cafile %s", b->cafile);
    return ke_tp_sh("mosquitto_pub -h 127.0.0.1 -p %d -q 1 -i ke-test-pub %s %s -t '%s' -m '%s' "
                    ">>%s/pub.log 2>&1",
                    b->port, auth, tls, topic, payload, b->dir);
}
