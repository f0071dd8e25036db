/*
 * ke_rpc_inproc.cc — what ke_rpc.c needs from grpc's C++ side:
 *
 *  - grpc's in-process transport: grpc 1.51 (Debian 12) declares
 *    grpc_inproc_channel_create with C++ linkage and does not ship its
 *    header, so this file declares it and gives ke_rpc.c an extern "C"
 *    entry point;
 *  - abseil's mutex deadlock detection, which Debian's abseil (built
 *    without NDEBUG) leaves on: every grpc mutex acquisition then updates
 *    a global lock-order graph under a global lock. Measured with perf at a
 *    fan-out of a few thousand messages a second: 4-5% of the server's
 *    CPU in GraphCycles alone, plus the contention on its lock.
 */
#include <absl/synchronization/mutex.h>
#include <grpc/grpc.h>

grpc_channel *grpc_inproc_channel_create(grpc_server *server, const grpc_channel_args *args,
                                         void *reserved);

extern "C" grpc_channel *ke_rpc_inproc_channel_create(grpc_server *server,
                                                      const grpc_channel_args *args)
{
    return grpc_inproc_channel_create(server, args, nullptr);
}

extern "C" void ke_rpc_absl_tune(void)
{
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}
