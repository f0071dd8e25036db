/*
 * ke_modbus_convert.c — registers ↔ text (ke_modbus_convert.h). Map:
 * arrange() undoes the swaps into most-significant-first words; decode_*
 * and encode_* are one function per property type.
 */
#include "ke_modbus_convert.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    ke_modbus_register reg;
} registers[] = {
    {"CoilRegister", KE_MODBUS_COIL},
    {"DiscreteInputRegister", KE_MODBUS_DISCRETE_INPUT},
    {"HoldingRegister", KE_MODBUS_HOLDING},
    {"InputRegister", KE_MODBUS_INPUT},
};

int ke_modbus_register_parse(const char *name, ke_modbus_register *out)
{
    for (size_t i = 0; name && i < sizeof(registers) / sizeof(registers[0]); i++)
        if (strcmp(name, registers[i].name) == 0) {
            *out = registers[i].reg;
            return 0;
        }
    return -1;
}

bool ke_modbus_register_writable(ke_modbus_register reg)
{
    return reg == KE_MODBUS_COIL || reg == KE_MODBUS_HOLDING;
}

static bool is_bits(ke_modbus_register reg)
{
    return reg == KE_MODBUS_COIL || reg == KE_MODBUS_DISCRETE_INPUT;
}

static double scale_of(const ke_modbus_visitor *v)
{
    return v->scale == 0 ? 1.0 : v->scale;
}

int ke_modbus_visitor_check(const ke_modbus_visitor *v, ke_prop_type type, const char **why)
{
    const char *w = NULL;
    unsigned n = v->limit;
    if (n == 0)
        w = "limit is 0";
    else if (!isfinite(v->scale))
        w = "scale is not a finite number";
    else if (is_bits(v->reg) && type != KE_PROP_BOOL)
        w = "coils and discrete inputs carry BOOLEAN properties only";
    else if (is_bits(v->reg) && n > KE_MODBUS_BITS_MAX)
        w = "a coil or discrete input property reads 1 bit (limit 1)";
    else if (!is_bits(v->reg) && n > KE_MODBUS_REGS_MAX)
        w = "limit above 31 registers";
    else if (!is_bits(v->reg) && type == KE_PROP_INT && n != 1 && n != 2 && n != 4)
        w = "an INT spans 1, 2 or 4 registers";
    else if (!is_bits(v->reg) && type == KE_PROP_FLOAT && n != 1 && n != 2 && n != 4)
        w = "a FLOAT spans 1 (integer × scale), 2 (float32) or 4 (float64) registers";
    else if (!is_bits(v->reg) && type == KE_PROP_BOOL && n != 1)
        w = "a BOOLEAN in a register spans 1 register";
    if (why)
        *why = w;
    return w ? -1 : 0;
}

/* arrange copies n words, undoing isRegisterSwap and isSwap, so that
 * out[0] is the most significant. Both swaps are their own inverse and
 * commute, so encoding uses the same function. */
static void arrange(const ke_modbus_visitor *v, const uint16_t *in, uint16_t *out, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        uint16_t w = in[v->register_swap ? n - 1 - i : i];
        out[i] = v->swap ? (uint16_t)((w >> 8) | (w << 8)) : w;
    }
}

static uint64_t join(const uint16_t *w, unsigned n)
{
    uint64_t x = 0;
    for (unsigned i = 0; i < n; i++)
        x = (x << 16) | w[i];
    return x;
}

static void split(uint64_t x, uint16_t *w, unsigned n)
{
    for (unsigned i = n; i-- > 0;) {
        w[i] = (uint16_t)x;
        x >>= 16;
    }
}

/* as_signed reads n words (1, 2, 4) as a two's-complement integer. */
static int64_t as_signed(uint64_t x, unsigned n)
{
    if (n == 1)
        return (int16_t)x;
    if (n == 2)
        return (int32_t)x;
    return (int64_t)x;
}

static int fmt(char *out, size_t size, const char *f, ...) __attribute__((format(printf, 3, 4)));
static int fmt(char *out, size_t size, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(out, size, f, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* raw_number: the registers as a number before the scale. */
static double raw_number(ke_prop_type type, const uint16_t *w, unsigned n)
{
    uint64_t x = join(w, n);
    if (type == KE_PROP_FLOAT && n == 2) {
        uint32_t u = (uint32_t)x;
        float f;
        memcpy(&f, &u, sizeof(f));
        return f;
    }
    if (type == KE_PROP_FLOAT && n == 4) {
        double d;
        memcpy(&d, &x, sizeof(d));
        return d;
    }
    return (double)as_signed(x, n);
}

static int decode_string(const uint16_t *w, unsigned n, char *out, size_t size)
{
    size_t k = 0;
    for (unsigned i = 0; i < n; i++)
        for (int b = 1; b >= 0; b--) {
            char c = (char)(w[i] >> (8 * b));
            if (c == '\0')
                goto done;
            if (c < 0x20 || c > 0x7e || k + 1 >= size)
                return -1;
            out[k++] = c;
        }
done:
    if (size == 0)
        return -1;
    out[k] = '\0';
    return 0;
}

int ke_modbus_decode(const ke_modbus_visitor *v, ke_prop_type type, const uint16_t *words,
                     const uint8_t *bits, char *out, size_t size)
{
    if (!out || size == 0 || ke_modbus_visitor_check(v, type, NULL) != 0)
        return -1;
    if (is_bits(v->reg))
        return bits ? fmt(out, size, "%s", bits[0] ? "true" : "false") : -1;
    if (!words)
        return -1;
    uint16_t w[KE_MODBUS_REGS_MAX];
    unsigned n = v->limit;
    arrange(v, words, w, n);
    switch (type) {
    case KE_PROP_BOOL:
        return fmt(out, size, "%s", w[0] ? "true" : "false");
    case KE_PROP_STRING:
        return decode_string(w, n, out, size);
    case KE_PROP_INT: {
        if (scale_of(v) == 1.0) /* exact, even past 2^53 */
            return fmt(out, size, "%lld", (long long)as_signed(join(w, n), n));
        double x = (double)as_signed(join(w, n), n) * scale_of(v);
        if (!(x >= -9.2e18 && x <= 9.2e18)) /* also refuses NaN */
            return -1;
        return fmt(out, size, "%lld", (long long)llround(x));
    }
    case KE_PROP_FLOAT: {
        double x = raw_number(type, w, n) * scale_of(v);
        if (!isfinite(x))
            return -1;
        return fmt(out, size, "%.10g", x);
    }
    }
    return -1;
}

static int parse_number(const char *text, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(text, &end);
    if (end == text || *end != '\0' || errno != 0 || !isfinite(d))
        return -1;
    *out = d;
    return 0;
}

static int parse_bool(const char *text, bool *out)
{
    if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0)
        *out = true;
    else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0)
        *out = false;
    else
        return -1;
    return 0;
}

/* encode_integer: x (already divided by the scale) into n words as a
 * signed integer of 16, 32 or 64 bits; refuses what does not fit. */
static int encode_integer(double x, uint16_t *w, unsigned n)
{
    double r = nearbyint(x);
    double lo = n == 1 ? -32768.0 : n == 2 ? -2147483648.0 : -9.2e18;
    double hi = n == 1 ? 32767.0 : n == 2 ? 2147483647.0 : 9.2e18;
    if (!(r >= lo && r <= hi))
        return -1;
    split((uint64_t)(int64_t)r, w, n);
    return 0;
}

static int encode_string(const char *text, uint16_t *w, unsigned n)
{
    size_t len = strlen(text);
    if (len > 2 * (size_t)n)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        size_t k = 2 * (size_t)i;
        uint8_t hi = k < len ? (uint8_t)text[k] : 0, lo = k + 1 < len ? (uint8_t)text[k + 1] : 0;
        w[i] = (uint16_t)(hi << 8 | lo);
    }
    return 0;
}

int ke_modbus_encode(const ke_modbus_visitor *v, ke_prop_type type, const char *text,
                     uint16_t *words, uint8_t *bits)
{
    if (!text || ke_modbus_visitor_check(v, type, NULL) != 0)
        return -1;
    if (is_bits(v->reg)) {
        bool b;
        if (!bits || parse_bool(text, &b) != 0)
            return -1;
        bits[0] = b;
        return 0;
    }
    if (!words)
        return -1;
    uint16_t w[KE_MODBUS_REGS_MAX];
    unsigned n = v->limit;
    double x;
    switch (type) {
    case KE_PROP_BOOL: {
        bool b;
        if (parse_bool(text, &b) != 0)
            return -1;
        w[0] = b;
        break;
    }
    case KE_PROP_STRING:
        if (encode_string(text, w, n) != 0)
            return -1;
        break;
    case KE_PROP_INT:
    case KE_PROP_FLOAT:
        if (parse_number(text, &x) != 0)
            return -1;
        x /= scale_of(v);
        if (type == KE_PROP_FLOAT && n == 2) {
            float f = (float)x;
            uint32_t u;
            if (!isfinite(f))
                return -1;
            memcpy(&u, &f, sizeof(u));
            split(u, w, n);
        } else if (type == KE_PROP_FLOAT && n == 4) {
            uint64_t u;
            if (!isfinite(x))
                return -1;
            memcpy(&u, &x, sizeof(u));
            split(u, w, n);
        } else if (encode_integer(x, w, n) != 0) {
            return -1;
        }
        break;
    default:
        return -1;
    }
    arrange(v, w, words, n);
    return 0;
}
