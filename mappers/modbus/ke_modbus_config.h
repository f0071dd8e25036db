/*
 * ke_modbus_config.h — what ke-modbus-mapper serves, read from KubeEdge
 * v1beta1 objects as JSON (jansson): the Device (spec.protocol,
 * spec.properties[].visitors, collectCycle, reportCycle) and, optionally,
 * its DeviceModel (each property's type and accessMode).
 *
 * Device JSON, the fields read (others are ignored):
 *
 *   spec.protocol.protocolName     "modbus"
 *   spec.protocol.configData       url: "tcp://host:port" or
 *                                  "rtu:///dev/ttyX?baud=9600&parity=N&data=8&stop=1&slave=1";
 *                                  or KubeEdge mapper style: ip, port (TCP) /
 *                                  serialPort, baudRate, parity, dataBits,
 *                                  stopBits (RTU); slaveID (default 1)
 *   spec.properties[]              name; collectCycle, reportCycle
 *                                  (nanoseconds, as KubeEdge's mappers read
 *                                  them); visitors.protocolName "modbus",
 *                                  visitors.configData {register, offset,
 *                                  limit, scale, isSwap, isRegisterSwap}
 *
 * Without a model a property's type follows its register: BOOLEAN for
 * coils and discrete inputs, INT when the scale is 1, FLOAT otherwise; and
 * it is writable when its register is (coils, holding registers).
 */
#ifndef KE_MODBUS_CONFIG_H
#define KE_MODBUS_CONFIG_H

#include <stdint.h>

#include "ke_mapper.h"
#include "ke_modbus_convert.h"

#define KE_MODBUS_HOST_MAX 255
#define KE_MODBUS_CYCLE_MIN_MS 100           /* a faster cycle is raised to this */
#define KE_MODBUS_CYCLE_MAX_MS 86400000u     /* one day */
#define KE_MODBUS_COLLECT_DEFAULT_MS 1000    /* collectCycle absent or 0 */
#define KE_MODBUS_ERR_MAX 256

typedef enum { KE_MODBUS_TCP, KE_MODBUS_RTU } ke_modbus_mode;

/* ke_modbus_link: where the device is. */
typedef struct ke_modbus_link {
    ke_modbus_mode mode;
    char host[KE_MODBUS_HOST_MAX + 1]; /* TCP: host; RTU: the serial device path */
    int port;                          /* TCP, default 502 */
    int baud, data_bits, stop_bits;    /* RTU, defaults 9600, 8, 1 */
    char parity;                       /* RTU: 'N', 'E' or 'O', default 'N' */
    int slave;                         /* unit id, 1..247 (TCP also 0 and 255) */
} ke_modbus_link;

/* ke_modbus_point: one property the mapper serves. */
typedef struct ke_modbus_point {
    char name[KE_MAPPER_TEXT_MAX + 1];
    ke_modbus_visitor visitor;
    ke_prop_type type;
    uint8_t access;      /* KE_PROP_READ, or KE_PROP_READWRITE */
    uint32_t collect_ms; /* read from the device every */
    uint32_t report_ms;  /* reported every (0: at start and on change) */
} ke_modbus_point;

typedef struct ke_modbus_config {
    char device[KE_MAPPER_TEXT_MAX + 1];
    ke_modbus_link link;
    ke_modbus_point points[KE_MAPPER_PROPS_MAX];
    size_t n_points;
} ke_modbus_config;

/* ke_modbus_url_parse reads "tcp://host[:port]" or
 * "rtu://<path>[?baud=&parity=&data=&stop=&slave=]" into *l (slave is left
 * as it was unless the URL names it). Returns 0, or -1 with a reason in
 * err[KE_MODBUS_ERR_MAX]. */
int ke_modbus_url_parse(const char *url, ke_modbus_link *l, char *err);

/* ke_modbus_config_parse fills *c from the Device's JSON text and, when
 * model_json is not NULL, its DeviceModel's. Properties without a modbus
 * visitor are skipped; an invalid visitor, a model property type the
 * mapper cannot carry, or more than KE_MAPPER_PROPS_MAX properties is an
 * error. Returns 0, or -1 with a reason in err[KE_MODBUS_ERR_MAX]. */
int ke_modbus_config_parse(const char *device_json, const char *model_json, ke_modbus_config *c,
                           char *err);

#endif
