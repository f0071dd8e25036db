#!/usr/bin/python3
"""kubeapi_pylist.py KUBECONFIG NAMESPACE LIMIT — for ke-bench-kubeapi.

Walks every pod of NAMESPACE with python3-kubernetes
(CoreV1Api.list_namespaced_pod, LIMIT per page, following metadata.continue)
and prints "COUNT PAGES SECONDS" on one line. Exits non-zero on any error.
"""
import sys
import time

from kubernetes import client, config


def main():
    if len(sys.argv) != 4:
        sys.stderr.write("usage: kubeapi_pylist.py KUBECONFIG NAMESPACE LIMIT\n")
        return 2
    kubeconfig, ns, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config.load_kube_config(config_file=kubeconfig)
    api = client.CoreV1Api()
    start = time.monotonic()
    count, pages, cont = 0, 0, None
    while True:
        if cont:
            page = api.list_namespaced_pod(ns, limit=limit, _continue=cont)
        else:
            page = api.list_namespaced_pod(ns, limit=limit)
        count += len(page.items)
        pages += 1
        cont = page.metadata._continue
        if not cont:
            break
    print("%d %d %.3f" % (count, pages, time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
