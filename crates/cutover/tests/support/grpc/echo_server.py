#!/usr/bin/python3
"""A real gRPC server (grpcio) for cutover's tests, deployed as a release.

Usage: echo_server.py PORT RELEASE
Methods (raw bytes, no protobuf): echo.Echo/Unary answers "RELEASE:request";
echo.Echo/Count streams "RELEASE:i" for i < int(request); echo.Echo/Bidi answers each message
of the stream with "RELEASE:message". Each call ends with the trailer x-release: RELEASE, so a
client sees whether trailers came through. grpc.health.v1.Health/Check answers SERVING, or
NOT_SERVING for a release whose id starts with "sick" (its health gate must fail).
"""
import signal
import sys
import threading
from concurrent import futures

import grpc

PORT, RELEASE = sys.argv[1], sys.argv[2]
HEALTH = "NOT_SERVING" if RELEASE.startswith("sick") else "SERVING"
# HealthCheckResponse { status = 1 (SERVING) | 2 (NOT_SERVING) }, as protobuf bytes.
HEALTH_ANSWER = {"SERVING": b"\x08\x01", "NOT_SERVING": b"\x08\x02"}[HEALTH]
TAG = RELEASE.encode() + b":"


def trailer(context):
    context.set_trailing_metadata((("x-release", RELEASE),))


def unary(request, context):
    trailer(context)
    return TAG + request


def count(request, context):
    for i in range(int(request)):
        yield TAG + str(i).encode()
    trailer(context)


def bidi(requests, context):
    for message in requests:
        yield TAG + message
    trailer(context)


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("echo.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(lambda _r, _c: HEALTH_ANSWER),
        }),
    ))
    server.add_insecure_port(f"127.0.0.1:{PORT}")
    server.start()
    stopped = threading.Event()
    # cutover drains before SIGTERM; what is still open then gets a few seconds.
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(5).wait(), stopped.set()))
    stopped.wait()


main()
