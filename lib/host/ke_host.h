/*
 * ke_host.h — facts about the host a program runs on, read one way for
 * every part that reports them (the node status, pods' hostIP).
 */
#ifndef KE_HOST_H
#define KE_HOST_H

#include <stddef.h>

/* ke_host_ipv4 writes the host's address: the first IPv4 address of an
 * interface that is up and not loopback, in the kernel's interface order
 * (the node's InternalIP). "" when there is none. */
void ke_host_ipv4(char *buf, size_t cap);

#endif
