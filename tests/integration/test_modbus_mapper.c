/*
 * test_modbus_mapper.c — ke-modbus-mapper end to end: a Modbus TCP server
 * in this process (libmodbus: modbus_tcp_listen, modbus_receive,
 * modbus_reply on a modbus_mapping_t, in a thread) holds the registers; a
 * private mosquitto; cloudcore; edgecore with EventBus and DeviceTwin;
 * the DeviceModel and a Device with KubeEdge's v1beta1 modbus protocol
 * config; and the mapper process (mappers/modbus) with that Device as its
 * --config. What is checked is what a user sees in the cloud
 * (DeviceController.GetTwin) and what the server's registers hold.
 *
 *   - the mapper starts before its Device reaches the edge (DeviceTwin
 *     refuses its first frames, 404): it sends state and values again
 *   - an input register × scale shows as reported; a changed register
 *     shows up; a register the server lacks (a Modbus exception) leaves
 *     the device online
 *   - SetDesired setpoint=42 reaches the holding register and is
 *     reported back
 *   - the server goes: the device turns OFFLINE; it returns: ONLINE again
 *     and readings resume
 *   - Modbus RTU on a pseudo-terminal (slave id 7): a float32 over two
 *     registers in swapped order is read, and a desired value written
 *
 * Skipped (exit 77) without libmodbus, the mapper program or mosquitto.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "devicecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_err.h"
#include "ke_mqtt.h"
#include "ke_testproc.h"
#include "ke_time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef KE_HAVE_LIBMODBUS
#include <arpa/inet.h>
#include <modbus.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pty.h>
#include <stdatomic.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#define NODE "edge-1"
#define DEVICE "boiler-1"
#define WAIT_MS 30000
#define CLIENTS_MAX 8

static ke_cluster C;
static ke_edge E;
static ke_mqtt B;
static ke_tp mapper, rtu_mapper;
static int mapper_running, rtu_mapper_running;
static char mapper_log[200], rtu_log[200];
static char broker_arg[64];
static const char *edge_extra[8];
static const char *twin_device = DEVICE; /* the device set_desired and get_twin name */

/* ---- the Modbus server: a thread serving a mapping that outlives it ---- */

static struct {
    pthread_mutex_t mu; /* guards map */
    modbus_mapping_t *map;
    modbus_t *ctx;
    int listen_fd, port;
    pthread_t th;
    atomic_int stop;
    int running;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .listen_fd = -1};

static void *server_main(void *arg)
{
    (void)arg;
    int clients[CLIENTS_MAX], n = 0;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    while (!atomic_load(&S.stop)) {
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(S.listen_fd, &rd);
        int maxfd = S.listen_fd;
        for (int i = 0; i < n; i++) {
            FD_SET(clients[i], &rd);
            maxfd = clients[i] > maxfd ? clients[i] : maxfd;
        }
        struct timeval tv = {0, 50000}; /* to see stop */
        int r = select(maxfd + 1, &rd, NULL, NULL, &tv);
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "modbus server: select: %s\n", strerror(errno));
            break;
        }
        if (r <= 0)
            continue;
        if (FD_ISSET(S.listen_fd, &rd)) {
            int fd = accept(S.listen_fd, NULL, NULL);
            if (fd >= 0 && n < CLIENTS_MAX)
                clients[n++] = fd;
            else if (fd >= 0)
                close(fd); /* bounded: the mapper needs one */
        }
        for (int i = 0; i < n; i++) {
            if (!FD_ISSET(clients[i], &rd))
                continue;
            modbus_set_socket(S.ctx, clients[i]);
            int len = modbus_receive(S.ctx, query);
            if (len > 0) {
                pthread_mutex_lock(&S.mu);
                if (modbus_reply(S.ctx, query, len, S.map) < 0)
                    fprintf(stderr, "modbus server: reply: %s\n", modbus_strerror(errno));
                pthread_mutex_unlock(&S.mu);
            } else if (len < 0) {
                close(clients[i]); /* the client went */
                clients[i--] = clients[--n];
            }
        }
    }
    for (int i = 0; i < n; i++)
        close(clients[i]); /* the mapper's connection goes with the server */
    return NULL;
}

/* server_start listens on port (0: a free one, kept in S.port). */
static void server_start(int port)
{
    S.ctx = modbus_new_tcp("127.0.0.1", port);
    assert_non_null(S.ctx);
    S.listen_fd = modbus_tcp_listen(S.ctx, 4);
    if (S.listen_fd < 0)
        fail_msg("modbus_tcp_listen on %d: %s", port, modbus_strerror(errno));
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(S.listen_fd, (struct sockaddr *)&sa, &sl), 0);
    S.port = ntohs(sa.sin_port);
    atomic_store(&S.stop, 0);
    assert_int_equal(pthread_create(&S.th, NULL, server_main, NULL), 0);
    S.running = 1;
}

static void server_stop(void)
{
    if (!S.running)
        return;
    atomic_store(&S.stop, 1);
    pthread_join(S.th, NULL);
    close(S.listen_fd);
    S.listen_fd = -1;
    modbus_free(S.ctx);
    S.ctx = NULL;
    S.running = 0;
}

static void set_input(int addr, uint16_t v)
{
    pthread_mutex_lock(&S.mu);
    S.map->tab_input_registers[addr] = v;
    pthread_mutex_unlock(&S.mu);
}

static uint16_t holding(int addr)
{
    pthread_mutex_lock(&S.mu);
    uint16_t v = S.map->tab_registers[addr];
    pthread_mutex_unlock(&S.mu);
    return v;
}

/* ---- a Modbus RTU server on a pseudo-terminal: the mapper opens the
 * pty's slave side by name as its serial line; this thread answers on the
 * master side (libmodbus' RTU backend with the master as its fd) ---- */

static struct {
    pthread_mutex_t mu; /* guards map */
    modbus_mapping_t *map;
    modbus_t *ctx;
    int master, slave;
    char name[64];
    pthread_t th;
    atomic_int stop;
    int running;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER, .master = -1, .slave = -1};

static void *rtu_main(void *arg)
{
    (void)arg;
    uint8_t query[MODBUS_RTU_MAX_ADU_LENGTH];
    while (!atomic_load(&R.stop)) {
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(R.master, &rd);
        struct timeval tv = {0, 50000}; /* to see stop */
        int r = select(R.master + 1, &rd, NULL, NULL, &tv);
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "rtu server: select: %s\n", strerror(errno));
            break;
        }
        if (r <= 0)
            continue;
        int len = modbus_receive(R.ctx, query);
        if (len > 0) {
            pthread_mutex_lock(&R.mu);
            if (modbus_reply(R.ctx, query, len, R.map) < 0)
                fprintf(stderr, "rtu server: reply: %s\n", modbus_strerror(errno));
            pthread_mutex_unlock(&R.mu);
        } else if (len < 0 && errno != ETIMEDOUT && errno != EMBBADCRC) {
            fprintf(stderr, "rtu server: receive: %s\n", modbus_strerror(errno));
        }
    }
    return NULL;
}

static void rtu_start(void)
{
    assert_int_equal(openpty(&R.master, &R.slave, R.name, NULL, NULL), 0);
    struct termios t;
    assert_int_equal(tcgetattr(R.slave, &t), 0);
    cfmakeraw(&t);
    assert_int_equal(tcsetattr(R.slave, TCSANOW, &t), 0);
    R.ctx = modbus_new_rtu(R.name, 9600, 'N', 8, 1);
    assert_non_null(R.ctx);
    assert_int_equal(modbus_set_slave(R.ctx, 7), 0);
    assert_int_equal(modbus_set_socket(R.ctx, R.master), 0);
    R.map = modbus_mapping_new(0, 0, 4, 0);
    assert_non_null(R.map);
    atomic_store(&R.stop, 0);
    assert_int_equal(pthread_create(&R.th, NULL, rtu_main, NULL), 0);
    R.running = 1;
}

static void rtu_stop(void)
{
    if (!R.running)
        return;
    atomic_store(&R.stop, 1);
    pthread_join(R.th, NULL);
    modbus_free(R.ctx); /* not modbus_close: the fds are the pty's, closed here */
    close(R.master);
    close(R.slave);
    modbus_mapping_free(R.map);
    R.running = 0;
}

static void rtu_set(int addr, uint16_t v)
{
    pthread_mutex_lock(&R.mu);
    R.map->tab_registers[addr] = v;
    pthread_mutex_unlock(&R.mu);
}

static uint16_t rtu_get(int addr)
{
    pthread_mutex_lock(&R.mu);
    uint16_t v = R.map->tab_registers[addr];
    pthread_mutex_unlock(&R.mu);
    return v;
}

/* ---- the cloud side ---- */

static void set_desired(const char *prop, const char *value)
{
    ke_dc_set_desired(C.api, "default", twin_device, prop, value);
}

/* get_twin: the cloud's twin of the device, or NULL (the caller frees). */
static Ke__V1__TwinReply *get_twin(void) { return ke_dc_get_twin(C.api, "default", twin_device); }

static void tails(void)
{
    ke_tp_sh("echo '--- mapper'; tail -20 %s; echo '--- rtu mapper'; tail -20 %s 2>/dev/null;"
             " echo '--- edgecore'; tail -20 %s",
             mapper_log, rtu_log, E.log);
}

static void poll_pause(void)
{
    struct timespec ts = {0, 20 * 1000000L}; /* between polls of the cloud's state */
    nanosleep(&ts, NULL);
}

/* wait_reported: the cloud shows prop reported as value. */
static void wait_reported(const char *prop, const char *value)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    char last[80] = "none";
    while (ke_time_mono_ms() < until) {
        Ke__V1__TwinReply *r = get_twin();
        int ok = 0;
        for (size_t i = 0; r && i < r->n_twins; i++)
            if (strcmp(r->twins[i]->property, prop) == 0 && r->twins[i]->reported) {
                snprintf(last, sizeof(last), "%s", r->twins[i]->reported->value);
                ok = strcmp(last, value) == 0;
            }
        if (r)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        if (ok)
            return;
        poll_pause();
    }
    tails();
    fail_msg("the cloud shows %s reported as %s, not %s", prop, last, value);
}

/* wait_state: the cloud shows the device in state. */
static void wait_state(Ke__V1__DeviceState state)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    int last = -1;
    while (ke_time_mono_ms() < until) {
        Ke__V1__TwinReply *r = get_twin();
        last = r ? (int)r->state : -1;
        if (r)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        if (last == (int)state)
            return;
        poll_pause();
    }
    tails();
    fail_msg("the device's state in the cloud is %d, not %d", last, (int)state);
}

/* ---- set-up ---- */

static void apply_retry(const char *json)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    ke_rpc_status st;
    while (ke_ec_apply(C.api, json, &st) != KE_RPC_OK) {
        if (ke_time_mono_ms() > until)
            fail_msg("apply: %s", st.message);
        poll_pause(); /* the node is not known to the cloud yet */
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void stop_broker(void) { ke_mqtt_stop(&B); }

static const char *MODEL =
    "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\","
    "\"metadata\":{\"name\":\"boiler\"},\"spec\":{\"protocol\":\"modbus\",\"properties\":["
    "{\"name\":\"temperature\",\"type\":\"FLOAT\",\"accessMode\":\"ReadOnly\"},"
    "{\"name\":\"setpoint\",\"type\":\"INT\",\"accessMode\":\"ReadWrite\"},"
    "{\"name\":\"spare\",\"type\":\"INT\",\"accessMode\":\"ReadOnly\"}]}}";

static int setup(void **state)
{
    (void)state;
    const char *bin = getenv("KE_MODBUS_MAPPER");
    if (!ke_mqtt_available() || !bin || !bin[0]) {
        fprintf(stderr, "mosquitto or ke-modbus-mapper not available: skipping\n");
        exit(77);
    }
    S.map = modbus_mapping_new(8, 8, 8, 8);
    assert_non_null(S.map);
    set_input(0, 215);
    S.map->tab_registers[1] = 7;
    server_start(0);

    ke_cluster_start(&C, NULL);
    char dir[200];
    snprintf(dir, sizeof(dir), "%s/mqtt", C.dir);
    atexit(stop_broker);
    ke_mqtt_start(&B, dir, 0);
    assert_int_equal(ke_cluster_join(&C, NODE, ke_cluster_token(&C)), 0);
    apply_retry(MODEL);
    snprintf(broker_arg, sizeof(broker_arg), "--eventbus.broker=127.0.0.1:%d", B.port);
    edge_extra[0] = "--modules.eventbus.enable=true";
    edge_extra[1] = broker_arg;
    edge_extra[2] = "--eventbus.backoff_initial=100ms";
    edge_extra[3] = "--eventbus.backoff_max=1s";
    edge_extra[4] = NULL;
    ke_edge_start(&C, &E, NODE, C.grpc_port, edge_extra);
    if (!ke_file_wait_contains(E.log, "connected to the broker", WAIT_MS))
        fail_msg("edgecore did not connect to the broker");

    /* the Device as KubeEdge v1beta1 writes it; the same JSON is the
     * mapper's --config. Cycles are in nanoseconds (200 ms). */
    char device[2048];
    int dn = snprintf(device, sizeof(device),
                      "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\","
                      "\"metadata\":{\"name\":\"" DEVICE "\",\"namespace\":\"default\"},"
                      "\"spec\":{\"deviceModelRef\":{\"name\":\"boiler\"},\"nodeName\":\"" NODE "\","
                      "\"protocol\":{\"protocolName\":\"modbus\",\"configData\":"
                      "{\"url\":\"tcp://127.0.0.1:%d\",\"slaveID\":1}},"
                      "\"properties\":["
                      "{\"name\":\"temperature\",\"collectCycle\":200000000,\"reportCycle\":0,"
                      "\"visitors\":{\"protocolName\":\"modbus\",\"configData\":"
                      "{\"register\":\"InputRegister\",\"offset\":0,\"limit\":1,\"scale\":0.1}}},"
                      "{\"name\":\"setpoint\",\"collectCycle\":200000000,"
                      "\"visitors\":{\"protocolName\":\"modbus\",\"configData\":"
                      "{\"register\":\"HoldingRegister\",\"offset\":1,\"limit\":1,\"scale\":1,"
                      "\"isSwap\":false,\"isRegisterSwap\":false}}},"
                      "{\"name\":\"spare\",\"visitors\":{\"protocolName\":\"modbus\",\"configData\":"
                      "{\"register\":\"InputRegister\",\"offset\":100,\"limit\":1}}}]}}",
                      S.port);
    assert_true(dn > 0 && (size_t)dn < sizeof(device));
    char dev_path[200], model_path[200], broker[64];
    snprintf(dev_path, sizeof(dev_path), "%s/device.json", C.dir);
    snprintf(model_path, sizeof(model_path), "%s/model.json", C.dir);
    snprintf(mapper_log, sizeof(mapper_log), "%s/mapper.log", C.dir);
    snprintf(rtu_log, sizeof(rtu_log), "%s/rtu-mapper.log", C.dir);
    snprintf(broker, sizeof(broker), "127.0.0.1:%d", B.port);
    write_file(dev_path, device);
    write_file(model_path, MODEL);
    char *argv[] = {(char *)bin, "--broker", broker, "--device", DEVICE, "--config", dev_path,
                    "--model", model_path, NULL};
    assert_int_equal(ke_tp_start_log(&mapper, argv, mapper_log), 0);
    mapper_running = 1;
    char line[128];
    if (ke_tp_wait_line(&mapper, "ready", WAIT_MS, line, sizeof(line)) != 0) {
        tails();
        fail_msg("the mapper did not start");
    }
    /* the Device reaches the edge only once DeviceTwin has refused the
     * mapper's first frames as of an unknown device: it must send them again */
    if (!ke_file_wait_contains(E.log, "topic=ke/mapper/" DEVICE "/up reason=unknown_device",
                               WAIT_MS)) {
        tails();
        fail_msg("DeviceTwin did not refuse the mapper's first frame");
    }
    apply_retry(device);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int mapper_status = mapper_running ? ke_tp_stop(&mapper) : 0;
    mapper_running = 0;
    if (rtu_mapper_running && ke_tp_stop(&rtu_mapper) != 0)
        mapper_status = -1;
    rtu_mapper_running = 0;
    rtu_stop();
    server_stop();
    int edge_status = E.running ? ke_tp_stop(&E.proc) : 0;
    E.running = 0;
    ke_rpc_channel_free(E.local);
    E.local = NULL;
    int broker_status = ke_mqtt_stop(&B);
    if (edge_status != 0 || mapper_status != 0)
        ke_tp_sh("echo edgecore %d mapper %d >&2; tail -40 %s %s >&2", edge_status,
                 mapper_status, E.log, mapper_log);
    ke_cluster_stop(&C);
    modbus_mapping_free(S.map);
    S.map = NULL;
    assert_int_equal(mapper_status, 0);
    assert_int_equal(edge_status, 0);
    assert_int_equal(broker_status, 0);
    return 0;
}

/* ---- the behaviours ---- */

static void test_registers_show_in_the_cloud_scaled(void **state)
{
    (void)state;
    wait_state(KE__V1__DEVICE_STATE__DEVICE_STATE_ONLINE);
    wait_reported("temperature", "21.5"); /* 215 × 0.1 */
    /* ... after its first frames were refused: the Device came later */
    if (!ke_file_contains(mapper_log, "unknown to the edge")) {
        tails();
        fail_msg("the mapper's first frames were not refused: the path is not tested");
    }
    wait_reported("setpoint", "7");
    set_input(0, 300);
    wait_reported("temperature", "30");
    /* a register the server does not have (exception: illegal address) is
     * that property's problem: logged, the device stays online */
    if (!ke_file_contains(mapper_log, "property=spare InputRegister 100+1")) {
        tails();
        fail_msg("the mapper did not log the read of the missing register");
    }
    wait_state(KE__V1__DEVICE_STATE__DEVICE_STATE_ONLINE);
}

static void test_a_desired_value_is_written_to_the_holding_register(void **state)
{
    (void)state;
    set_desired("setpoint", "42");
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (holding(1) != 42) {
        if (ke_time_mono_ms() > until) {
            tails();
            fail_msg("holding register 1 is %u, not 42", holding(1));
        }
        poll_pause();
    }
    wait_reported("setpoint", "42");
}

static void test_a_server_gone_makes_the_device_offline_then_online(void **state)
{
    (void)state;
    int port = S.port;
    server_stop();
    wait_state(KE__V1__DEVICE_STATE__DEVICE_STATE_OFFLINE);
    set_input(0, 250);
    server_start(port);
    wait_state(KE__V1__DEVICE_STATE__DEVICE_STATE_ONLINE);
    wait_reported("temperature", "25");
    /* the link is whole again: a write still reaches the register */
    set_desired("setpoint", "43");
    wait_reported("setpoint", "43");
    assert_int_equal(holding(1), 43);
}

/* Modbus RTU: a float32 over two registers in swapped order (CDAB), on a
 * serial line (a pty) with slave id 7, read and written. */
static void test_rtu_float32_read_and_written_over_a_serial_line(void **state)
{
    (void)state;
    rtu_start();
    rtu_set(0, 0x0000); /* 23.5f = 0x41BC0000, low register first */
    rtu_set(1, 0x41BC);
    static const char *model =
        "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\","
        "\"metadata\":{\"name\":\"tank\"},\"spec\":{\"properties\":["
        "{\"name\":\"level\",\"type\":\"FLOAT\",\"accessMode\":\"ReadWrite\"}]}}";
    apply_retry(model);
    char device[1024];
    int dn = snprintf(device, sizeof(device),
                      "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\","
                      "\"metadata\":{\"name\":\"tank-1\",\"namespace\":\"default\"},"
                      "\"spec\":{\"deviceModelRef\":{\"name\":\"tank\"},\"nodeName\":\"" NODE "\","
                      "\"protocol\":{\"protocolName\":\"modbus\",\"configData\":"
                      "{\"url\":\"rtu://%s?baud=9600&parity=N&data=8&stop=1&slave=7\"}},"
                      "\"properties\":[{\"name\":\"level\",\"collectCycle\":200000000,"
                      "\"visitors\":{\"protocolName\":\"modbus\",\"configData\":"
                      "{\"register\":\"HoldingRegister\",\"offset\":0,\"limit\":2,"
                      "\"isRegisterSwap\":true}}}]}}",
                      R.name);
    assert_true(dn > 0 && (size_t)dn < sizeof(device));
    apply_retry(device);
    char dev_path[200], model_path[200], broker[64];
    snprintf(dev_path, sizeof(dev_path), "%s/tank.json", C.dir);
    snprintf(model_path, sizeof(model_path), "%s/tank-model.json", C.dir);
    snprintf(broker, sizeof(broker), "127.0.0.1:%d", B.port);
    write_file(dev_path, device);
    write_file(model_path, model);
    char *argv[] = {(char *)getenv("KE_MODBUS_MAPPER"), "--broker", broker, "--device", "tank-1",
                    "--config", dev_path, "--model", model_path, NULL};
    assert_int_equal(ke_tp_start_log(&rtu_mapper, argv, rtu_log), 0);
    rtu_mapper_running = 1;
    char line[128];
    if (ke_tp_wait_line(&rtu_mapper, "ready", WAIT_MS, line, sizeof(line)) != 0) {
        tails();
        fail_msg("the RTU mapper did not start");
    }
    twin_device = "tank-1";
    wait_state(KE__V1__DEVICE_STATE__DEVICE_STATE_ONLINE);
    wait_reported("level", "23.5");
    set_desired("level", "12.25"); /* 0x41440000 */
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (rtu_get(0) != 0x0000 || rtu_get(1) != 0x4144) {
        if (ke_time_mono_ms() > until) {
            tails();
            fail_msg("registers 0-1 hold %04x %04x, not 0000 4144", rtu_get(0), rtu_get(1));
        }
        poll_pause();
    }
    wait_reported("level", "12.25");
    twin_device = DEVICE;
    assert_int_equal(ke_tp_stop(&rtu_mapper), 0);
    rtu_mapper_running = 0;
    rtu_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registers_show_in_the_cloud_scaled),
        cmocka_unit_test(test_a_desired_value_is_written_to_the_holding_register),
        cmocka_unit_test(test_a_server_gone_makes_the_device_offline_then_online),
        cmocka_unit_test(test_rtu_float32_read_and_written_over_a_serial_line),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

#else /* no libmodbus */

int main(void)
{
    fprintf(stderr, "libmodbus not installed (or ke-modbus-mapper not built): skipping\n");
    return 77;
}

#endif
