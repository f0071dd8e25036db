#ifndef KE_CLOUDCORE_TLS_BUFFERS_H
#define KE_CLOUDCORE_TLS_BUFFERS_H

/* tls_buffers_setup turns SSL_MODE_RELEASE_BUFFERS on (release != 0) or
 * off for every TLS connection made from now on (see tls_buffers.c).
 * Returns 0, or -1 when the interposition of SSL_new is not in effect
 * (then OpenSSL's own SSL_new runs and buffers are kept). */
int tls_buffers_setup(int release);

#endif
