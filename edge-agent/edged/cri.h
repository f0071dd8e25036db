/*
 * cri.h — Edged's client of the container runtime (CRI runtime.v1 over
 * the runtime's Unix socket, api/third_party/cri/api.proto), on the edge
 * loop: every call is asynchronous and its completion runs on the loop.
 */
#ifndef EDGED_CRI_H
#define EDGED_CRI_H

#include "cri/api.pb-c.h"
#include "ke_rt.h"

typedef struct cri_client cri_client;

/* cri_done: the call ended; reply (borrowed, NULL unless st->code is OK) is
 * of the method's output type. Runs on the loop, once. */
typedef void (*cri_done)(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud);

typedef enum { CRI_RUNTIME, CRI_IMAGE } cri_service;

/* cri_client_new connects (lazily) to endpoint: a socket path
 * ("/run/containerd/containerd.sock") or a grpc target ("unix:..."). */
int cri_client_new(ke_rt *e, const char *endpoint, cri_client **out);

/* cri_call calls method (its name in the service: "RunPodSandbox") with
 * req; timeout_ms 0 means the client's default (2 minutes). Returns 0 (done
 * will run) or a KE_E* error (it will not). */
int cri_call(cri_client *c, cri_service svc, const char *method, const ProtobufCMessage *req,
             int64_t timeout_ms, cri_done done, void *ud);

/* cri_client_cancel cancels every open call (their done runs with
 * CANCELLED); cri_client_free frees a client with no open call. */
void cri_client_cancel(cri_client *c);
void cri_client_free(cri_client *c);

#endif
