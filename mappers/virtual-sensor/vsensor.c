/*
 * vsensor.c — the virtual sensor (vsensor.h): a first-order drift of the
 * temperature toward the setpoint (1/8 of the gap a second, at least
 * 0.01 °C), a deterministic ±0.05 °C ripple so readings change even at
 * rest, and a humidity that falls 2 %RH per °C above 20 °C. Values are
 * formatted by hand ("21.37", "-3.05") to keep printf out of the firmware.
 */
#include "vsensor.h"

#include <string.h>

const ke_prop vsensor_props[VSENSOR_NPROPS] = {
    /* name          type           access             period_ms change_ms */
    [VS_TEMPERATURE] = {"temperature", KE_PROP_FLOAT, KE_PROP_READ, 10000, 250},
    [VS_HUMIDITY] = {"humidity", KE_PROP_FLOAT, KE_PROP_READ, 10000, 250},
    [VS_SETPOINT] = {"setpoint", KE_PROP_INT, KE_PROP_READWRITE, 30000, 0},
    [VS_COUNT] = {"count", KE_PROP_INT, KE_PROP_READ, 0, 250},
    [VS_STACK_HWM] = {"stack_hwm", KE_PROP_INT, KE_PROP_READ, 30000, 1000},
};

void vsensor_init(vsensor *v, uint32_t now_ms, size_t (*stack_hwm)(void))
{
    memset(v, 0, sizeof(*v));
    v->temp_centi = 2000;
    v->hum_centi = 5000;
    v->setpoint = VSENSOR_SETPOINT_DEFAULT;
    v->next_tick = now_ms + VSENSOR_TICK_MS;
    v->stack_hwm = stack_hwm;
}

static int32_t clamp(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

void vsensor_step(vsensor *v, uint32_t now_ms)
{
    while ((int32_t)(now_ms - v->next_tick) >= 0) {
        v->next_tick += VSENSOR_TICK_MS;
        v->count++;
        int32_t gap = v->setpoint * 100 - v->temp_centi;
        int32_t d = gap / 8;
        if (d == 0 && gap != 0)
            d = gap > 0 ? 1 : -1;
        v->temp_centi += d;
        /* ripple: -5..+5 centi-degrees, period 11 s, around the drift */
        int32_t ripple = (int32_t)(v->count % 11u) - 5;
        int32_t t = v->temp_centi + ripple;
        v->hum_centi = clamp(5000 - 2 * (t - 2000), 500, 9500);
    }
}

/* put_u32 writes v in decimal at *o (within end); returns false if full. */
static int put_u32(char **o, char *end, uint32_t v)
{
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0);
    if (end - *o < n)
        return -1;
    while (n > 0)
        *(*o)++ = digits[--n];
    return 0;
}

/* fmt_int and fmt_centi write a NUL-terminated number into value[size]. */
static int fmt_int(char *value, size_t size, int32_t x)
{
    char *o = value, *end = value + size - 1;
    if (x < 0) {
        if (o == end)
            return -1;
        *o++ = '-';
    }
    if (put_u32(&o, end, x < 0 ? (uint32_t)-(int64_t)x : (uint32_t)x) != 0)
        return -1;
    *o = '\0';
    return 0;
}

static int fmt_centi(char *value, size_t size, int32_t c)
{
    uint32_t a = c < 0 ? (uint32_t)-(int64_t)c : (uint32_t)c;
    char *o = value, *end = value + size - 1;
    if (c < 0)
        *o++ = '-';
    if (put_u32(&o, end, a / 100u) != 0 || end - o < 3)
        return -1;
    *o++ = '.';
    *o++ = (char)('0' + a / 10u % 10u);
    *o++ = (char)('0' + a % 10u);
    *o = '\0';
    return 0;
}

int vsensor_read(void *user, const ke_prop *p, char *value, size_t size)
{
    vsensor *v = user;
    int32_t ripple = (int32_t)(v->count % 11u) - 5;
    switch (p - vsensor_props) {
    case VS_TEMPERATURE:
        return fmt_centi(value, size, v->temp_centi + ripple);
    case VS_HUMIDITY:
        return fmt_centi(value, size, v->hum_centi);
    case VS_SETPOINT:
        return fmt_int(value, size, v->setpoint);
    case VS_COUNT:
        return fmt_int(value, size, (int32_t)v->count);
    case VS_STACK_HWM:
        return fmt_int(value, size, v->stack_hwm ? (int32_t)v->stack_hwm() : 0);
    default:
        return -1;
    }
}

/* parse_int: an optional '-', 1..6 digits, nothing else (so "30" and
 * "-4", not "30.5", "3e1" or ""). */
static int parse_int(const char *s, int32_t *out)
{
    int neg = *s == '-';
    s += neg;
    int32_t x = 0;
    int n = 0;
    for (; *s; s++, n++) {
        if (*s < '0' || *s > '9' || n == 6)
            return -1;
        x = x * 10 + (*s - '0');
    }
    if (n == 0)
        return -1;
    *out = neg ? -x : x;
    return 0;
}

int vsensor_write(void *user, const ke_prop *p, const char *value)
{
    vsensor *v = user;
    int32_t sp;
    if (p != &vsensor_props[VS_SETPOINT] || parse_int(value, &sp) != 0 ||
        sp < VSENSOR_SETPOINT_MIN || sp > VSENSOR_SETPOINT_MAX)
        return -1; /* the SDK reports the setpoint held, so the twin shows it */
    v->setpoint = sp;
    return 0;
}
