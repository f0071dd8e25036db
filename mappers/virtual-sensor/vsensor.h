/*
 * vsensor.h — the virtual temperature/humidity sensor: its simulated
 * physics and its property table, shared by the firmware (fw_main.c, over
 * a board's UART) and the host program (host_main.c, over MQTT).
 *
 * Properties (the DeviceModel in mappers/README.md, "virtual-sensor"):
 *   temperature  FLOAT  ReadOnly   °C, drifts toward the setpoint
 *   humidity     FLOAT  ReadOnly   %RH, falls as the air warms
 *   setpoint     INT    ReadWrite  °C, 5..40, the target temperature
 *   count        INT    ReadOnly   readings taken since boot (1 a second)
 *   stack_hwm    INT    ReadOnly   bytes of stack used at most (firmware)
 *
 * Everything is integer arithmetic (centi-units) and deterministic: no
 * floating point, no libc formatting, so the firmware stays small.
 */
#ifndef VSENSOR_H
#define VSENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "ke_mapper.h"

#define VSENSOR_NPROPS 5
#define VSENSOR_TICK_MS 1000       /* one reading a second */
#define VSENSOR_SETPOINT_MIN 5     /* °C */
#define VSENSOR_SETPOINT_MAX 40    /* °C */
#define VSENSOR_SETPOINT_DEFAULT 21

/* Indices into vsensor_props. */
enum { VS_TEMPERATURE, VS_HUMIDITY, VS_SETPOINT, VS_COUNT, VS_STACK_HWM };

typedef struct vsensor {
    int32_t temp_centi;     /* °C × 100 */
    int32_t hum_centi;      /* %RH × 100 */
    int32_t setpoint;       /* °C */
    uint32_t count;         /* readings taken */
    uint32_t next_tick;     /* ms */
    size_t (*stack_hwm)(void); /* NULL on a host: reported as 0 */
} vsensor;

extern const ke_prop vsensor_props[VSENSOR_NPROPS];

/* vsensor_init starts the simulation at now_ms (20.00 °C, 50.00 %RH). */
void vsensor_init(vsensor *v, uint32_t now_ms, size_t (*stack_hwm)(void));

/* vsensor_step takes the readings due at now_ms (one per VSENSOR_TICK_MS). */
void vsensor_step(vsensor *v, uint32_t now_ms);

/* The SDK's callbacks (ke_read_fn, ke_write_fn); user is the vsensor. */
int vsensor_read(void *user, const ke_prop *p, char *value, size_t size);
int vsensor_write(void *user, const ke_prop *p, const char *value);

#endif
