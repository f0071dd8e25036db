/*
 * ke_modbus_convert.h — Modbus registers ↔ property values as text, after
 * KubeEdge's v1beta1 Modbus visitor (properties[].visitors.configData:
 * register, offset, limit, scale, isSwap, isRegisterSwap).
 *
 * No libmodbus and no OS here: pure functions over the words and bits a
 * read returned or a write will send, so the unit tests
 * (tests/unit/test_modbus_convert.c) cover every rule.
 *
 * The rules (mappers/README.md, "Modbus"):
 *   - a register's 16 bits are big-endian; isSwap swaps the two bytes of
 *     every register, isRegisterSwap reverses the order of the registers
 *     (both before decoding, both again after encoding);
 *   - BOOLEAN: the first bit of a coil/discrete input, or register != 0;
 *   - INT: 1, 2 or 4 registers, signed two's complement, × scale, rounded;
 *   - FLOAT: 1 register (signed integer) × scale, 2 registers an IEEE 754
 *     float32, 4 a float64, each × scale;
 *   - STRING: 2 ASCII bytes a register, up to the first NUL.
 */
#ifndef KE_MODBUS_CONVERT_H
#define KE_MODBUS_CONVERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ke_mapper.h"

#define KE_MODBUS_REGS_MAX 31 /* registers a property spans (a STRING of 62 bytes) */
#define KE_MODBUS_BITS_MAX 1  /* coils / discrete inputs a property reads */

typedef enum {
    KE_MODBUS_COIL,           /* "CoilRegister": 1 bit, read/write */
    KE_MODBUS_DISCRETE_INPUT, /* "DiscreteInputRegister": 1 bit, read-only */
    KE_MODBUS_HOLDING,        /* "HoldingRegister": 16 bits, read/write */
    KE_MODBUS_INPUT,          /* "InputRegister": 16 bits, read-only */
} ke_modbus_register;

/* ke_modbus_visitor: one property's place in the device. */
typedef struct ke_modbus_visitor {
    ke_modbus_register reg;
    uint16_t offset;
    uint16_t limit; /* registers or bits read (count) */
    double scale;   /* 0 is taken as 1 (KubeEdge omits it when 1) */
    bool swap;      /* isSwap: the bytes of each register */
    bool register_swap; /* isRegisterSwap: the order of the registers */
} ke_modbus_visitor;

/* ke_modbus_register_parse maps KubeEdge's register name to *out.
 * Returns 0, or -1 for an unknown name. */
int ke_modbus_register_parse(const char *name, ke_modbus_register *out);

/* ke_modbus_register_writable: coils and holding registers. */
bool ke_modbus_register_writable(ke_modbus_register reg);

/* ke_modbus_visitor_check tells whether v can carry a value of type: the
 * limit fits the type (see the rules above) and KE_MODBUS_REGS_MAX /
 * KE_MODBUS_BITS_MAX. Returns 0, or -1 with a reason in why (may be NULL). */
int ke_modbus_visitor_check(const ke_modbus_visitor *v, ke_prop_type type, const char **why);

/* ke_modbus_decode turns what was read into text in out[size]: for
 * registers, words[v->limit] (host order, as libmodbus returns them); for
 * coils and discrete inputs, bits[v->limit] (0 or 1). Returns 0, or -1
 * when the value cannot be shown (a NaN, a non-ASCII string, out too
 * small, a visitor that fails ke_modbus_visitor_check). */
int ke_modbus_decode(const ke_modbus_visitor *v, ke_prop_type type, const uint16_t *words,
                     const uint8_t *bits, char *out, size_t size);

/* ke_modbus_encode turns text into what a write sends: words[v->limit]
 * for a holding register, bits[v->limit] for a coil. Returns 0, or -1 when
 * the text is not a value of type, or does not fit the registers once
 * divided by the scale. */
int ke_modbus_encode(const ke_modbus_visitor *v, ke_prop_type type, const char *text,
                     uint16_t *words, uint8_t *bits);

#endif
