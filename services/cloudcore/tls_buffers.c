/* tls_buffers.c: TLS connections that give their record buffers back
 * while idle.
 *
 * grpc's TSI layer gives each TLS connection an OpenSSL SSL object, and
 * OpenSSL keeps a read and a write record buffer (~17 KiB each) in it for
 * as long as the connection lives. SSL_MODE_RELEASE_BUFFERS frees them
 * whenever they are empty, which for an idle edge node's connection is
 * nearly always; but grpc neither sets the mode nor exposes its SSL
 * objects (no channel argument, no hook in grpc_ssl_server_credentials).
 * So this program defines SSL_new itself: the dynamic linker resolves
 * libgrpc's call to it (an executable's symbols come first), and it calls
 * OpenSSL's SSL_new and sets the mode on the result. Measured with
 * ke-bench-edgesim: 5.5 KiB (16 KiB TLS frames) to 8.7 KiB (4 KiB frames)
 * less RSS per connected node, and no fan-out rate change beyond the
 * bench's noise (a released buffer is malloc'ed again for the next record).
 *
 * It only works when libssl is a shared library found after this program;
 * tls_buffers_setup checks that the interposition is live and says so
 * when it is not, rather than letting the saving silently vanish. */
#include "tls_buffers.h"

#include <dlfcn.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>

static atomic_int release_on;
static SSL *(*real_ssl_new)(SSL_CTX *);
static pthread_once_t real_once = PTHREAD_ONCE_INIT;

static void find_real(void)
{
    /* the next SSL_new in lookup order: libssl's */
    *(void **)&real_ssl_new = dlsym(RTLD_NEXT, "SSL_new");
}

SSL *SSL_new(SSL_CTX *ctx)
{
    pthread_once(&real_once, find_real);
    if (!real_ssl_new)
        return NULL; /* libssl without SSL_new: the caller sees a failed SSL_new */
    SSL *s = real_ssl_new(ctx);
    if (s && atomic_load(&release_on))
        SSL_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
    return s;
}

int tls_buffers_setup(int release)
{
    atomic_store(&release_on, release ? 1 : 0);
    pthread_once(&real_once, find_real);
    /* Live when the SSL_new everyone resolves is this one and OpenSSL's
     * was found behind it. */
    void *global = dlsym(RTLD_DEFAULT, "SSL_new");
    return real_ssl_new && global == (void *)SSL_new ? 0 : -1;
}
