#!/usr/bin/python3
"""edgelocal — a command-line client of edgecore's local API (EdgeLocal,
api/edge.proto), for operators and scripts on an edge host:

  edgelocal.py --socket PATH list [PREFIX]
  edgelocal.py --socket PATH get KEY
  edgelocal.py --socket PATH report KEY VERSION GROUP [JSON] [--delete]

`report` queues an upstream report in edgecore's outbox exactly as the edge
modules do (Edged: group podstatus; DeviceTwin: group twin). Stubs are
generated from api/*.proto at start (protoc + grpc_python_plugin).
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def stubs():
    out = tempfile.mkdtemp(prefix="edgelocal-")
    api = os.path.join(HERE, "..", "api")
    protos = [os.path.join(api, p) for p in sorted(os.listdir(api)) if p.endswith(".proto")]
    subprocess.run(["protoc", "-I" + api, "--python_out=" + out, "--grpc_python_out=" + out,
                    "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos,
                   check=True)
    sys.path.insert(0, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", required=True, help="edgecore's local.listen unix socket")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list")
    ls.add_argument("prefix", nargs="?", default="")
    g = sub.add_parser("get")
    g.add_argument("key")
    r = sub.add_parser("report")
    r.add_argument("key")
    r.add_argument("version", type=int)
    r.add_argument("group")
    r.add_argument("json", nargs="?", default="")
    r.add_argument("--delete", action="store_true")
    a = ap.parse_args()
    stubs()
    import grpc
    import edge_pb2 as ep
    import edge_pb2_grpc as eg
    import message_pb2 as mp
    local = eg.EdgeLocalStub(grpc.insecure_channel("unix:" + a.socket))
    try:
        if a.cmd == "list":
            reply = local.List(ep.EdgeListRequest(prefix=a.prefix))
            print("%-60s %s" % ("KEY", "VERSION"))
            for o in reply.objects:
                print("%-60s %d" % (o.key, o.resource_version))
            print("(%d reports waiting for the cloud)" % reply.outbox_pending)
        elif a.cmd == "get":
            print(local.Get(ep.EdgeGetRequest(key=a.key)).content.decode())
        else:
            op = mp.OPERATION_DELETE if a.delete else mp.OPERATION_UPDATE
            reply = local.Report(ep.ReportRequest(message=mp.Message(
                header=mp.MessageHeader(resource_version=a.version),
                route=mp.Route(source="edgelocal", group=a.group, operation=op,
                               resource=a.key),
                content=a.json.encode())))
            print("queued as %d%s" % (reply.outbox_seq, " (duplicate)" if reply.duplicate else ""))
    except grpc.RpcError as e:
        print("error: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
