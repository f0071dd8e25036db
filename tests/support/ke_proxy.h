/*
 * ke_proxy.h — a TCP proxy for tests of links that drop: it forwards
 * 127.0.0.1:<its port> to a target, and on request cuts every open
 * connection (both sides see a reset/close) or freezes them (bytes stop
 * flowing, sockets stay open: a silent peer). One thread, poll(2).
 */
#ifndef KE_PROXY_H
#define KE_PROXY_H

typedef struct ke_proxy ke_proxy;

/* ke_proxy_start listens on 127.0.0.1:0 and forwards to 127.0.0.1:target_port. */
int ke_proxy_start(int target_port, ke_proxy **out);

/* ke_proxy_port returns the port the proxy listens on. */
int ke_proxy_port(const ke_proxy *p);

/* ke_proxy_cut closes every open connection; returns once they are closed.
 * New connections are accepted as before. Returns how many were cut. */
int ke_proxy_cut(ke_proxy *p);

/* ke_proxy_freeze stops (on) or resumes (off) forwarding on every
 * connection, without closing them. */
void ke_proxy_freeze(ke_proxy *p, int on);

/* ke_proxy_accepted returns how many connections the proxy accepted. */
int ke_proxy_accepted(ke_proxy *p);

/* ke_proxy_stop closes everything and frees the proxy. NULL: no-op. */
void ke_proxy_stop(ke_proxy *p);

#endif
