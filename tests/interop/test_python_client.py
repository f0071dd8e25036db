#!/usr/bin/python3
"""Interop: a Python gRPC client (Debian's python3-grpcio) against cloudcore.

Stubs are generated at test time from api/*.proto into a temporary
directory, the way a user in another language would consume the contract.
The test starts cloudcore itself, waits for its "ready" line, and checks
unary (Ping), bidirectional (Echo) and server-streaming (Ticks) replies and
that an invalid request gets INVALID_ARGUMENT.
"""
import os
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ.get("KE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
CLOUDCORE = os.environ.get("KE_CLOUDCORE")


def generate_stubs(out):
    api = os.path.join(SRC, "api")
    protos = [os.path.join(api, p) for p in sorted(os.listdir(api)) if p.endswith(".proto")]
    subprocess.run(
        ["protoc", "-I" + api, "--python_out=" + out, "--grpc_python_out=" + out,
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos,
        check=True)
    sys.path.insert(0, out)


class CloudcoreInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not CLOUDCORE:
            raise unittest.SkipTest("KE_CLOUDCORE not set: run through ctest")
        cls.tmp = tempfile.TemporaryDirectory()
        generate_stubs(cls.tmp.name)
        global grpc, diag_pb2, diag_pb2_grpc
        import grpc
        import diag_pb2
        import diag_pb2_grpc
        cls.proc = subprocess.Popen(
            [CLOUDCORE, "--grpc.listen=127.0.0.1:0", "--http.listen=127.0.0.1:0", "--kubeapi.listen=127.0.0.1:0",
             "--cloudhub.enable=false"],
            stdout=subprocess.PIPE, text=True)
        line = cls.proc.stdout.readline()
        if not line.startswith("ready "):
            cls.proc.kill()
            raise RuntimeError("cloudcore did not get ready: %r" % line)
        fields = dict(kv.split("=") for kv in line.split()[1:])
        cls.channel = grpc.insecure_channel("127.0.0.1:%s" % fields["grpc"])
        cls.stub = diag_pb2_grpc.DiagnosticsStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.proc.terminate()
        rc = cls.proc.wait(timeout=10)
        cls.tmp.cleanup()
        assert rc == 0, "cloudcore exited with %d" % rc

    def test_unary_ping_echoes_payload_and_names_server(self):
        reply = self.stub.Ping(diag_pb2.PingRequest(payload=b"\x00hello\xff"), timeout=10)
        self.assertEqual(reply.payload, b"\x00hello\xff")
        self.assertEqual(reply.server, "cloudcore")
        self.assertGreater(reply.time_ms, 0)

    def test_bidi_echo_returns_every_frame_in_order(self):
        frames = [diag_pb2.EchoFrame(seq=i, payload=bytes([i % 256]) * i) for i in range(1, 201)]
        got = list(self.stub.Echo(iter(frames), timeout=30))
        self.assertEqual([f.seq for f in got], list(range(1, 201)))
        self.assertEqual([f.payload for f in got], [f.payload for f in frames])

    def test_server_stream_ticks_sends_count_frames(self):
        got = list(self.stub.Ticks(diag_pb2.TicksRequest(count=500, payload_size=100), timeout=30))
        self.assertEqual(len(got), 500)
        self.assertEqual(got[-1].seq, 500)
        self.assertTrue(all(len(f.payload) == 100 for f in got))

    def test_invalid_request_is_refused_with_invalid_argument(self):
        raw = self.channel.unary_unary("/ke.v1.Diagnostics/Ping",
                                       request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
        with self.assertRaises(grpc.RpcError) as cm:
            raw(b"\xff\xff\xff\xff", timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("PingRequest", cm.exception.details())
        # and the server goes on serving
        self.assertEqual(self.stub.Ping(diag_pb2.PingRequest(payload=b"x"), timeout=10).payload, b"x")

    def test_unknown_method_is_unimplemented(self):
        raw = self.channel.unary_unary("/ke.v1.Diagnostics/Nope",
                                       request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
        with self.assertRaises(grpc.RpcError) as cm:
            raw(b"", timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)


if __name__ == "__main__":
    unittest.main(verbosity=2)
