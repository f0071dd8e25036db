/*
 * ke_rpc_inproc.cc — exposes grpc's in-process transport to C.
 *
 * grpc 1.51 (Debian 12) declares grpc_inproc_channel_create with C++
 * linkage and does not ship its header, so this one-function C++ file
 * declares it and gives ke_rpc.c an extern "C" entry point.
 */
#include <grpc/grpc.h>

grpc_channel *grpc_inproc_channel_create(grpc_server *server, const grpc_channel_args *args,
                                         void *reserved);

extern "C" grpc_channel *ke_rpc_inproc_channel_create(grpc_server *server,
                                                      const grpc_channel_args *args)
{
    return grpc_inproc_channel_create(server, args, nullptr);
}
