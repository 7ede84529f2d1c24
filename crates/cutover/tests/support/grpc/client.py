#!/usr/bin/python3
"""A real gRPC client (grpcio) for cutover's tests: prints one JSON line per call.

Usage: client.py TARGET [--tls CA_PEM HOST] MODE ARGS
  unary N            N unary calls one after another
  count N            one server-streaming call of N messages
  bidi N INTERVAL_S  one bidirectional stream: N messages, INTERVAL_S apart
Each line: {"call", "ok", "code", "answers": [...], "trailer": x-release or null, "error"}.
"""
import json
import sys
import time

import grpc

args = sys.argv[1:]
target = args.pop(0)
if args[0] == "--tls":
    _, ca, host = args[:3]
    args = args[3:]
    with open(ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    channel = grpc.secure_channel(target, credentials, options=[
        ("grpc.ssl_target_name_override", host), ("grpc.default_authority", host)])
else:
    channel = grpc.insecure_channel(target)
mode = args.pop(0)


def report(call, answers, outcome):
    line = {"call": call, "answers": [a.decode() for a in answers]}
    try:
        line["code"] = outcome.code().name
        line["ok"] = outcome.code() == grpc.StatusCode.OK
        line["trailer"] = dict(outcome.trailing_metadata() or ()).get("x-release")
        line["error"] = outcome.details() if not line["ok"] else None
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        line.update(ok=False, code="CLIENT", trailer=None, error=repr(e))
    print(json.dumps(line), flush=True)


if mode == "unary":
    method = channel.unary_unary("/echo.Echo/Unary")
    for i in range(int(args[0])):
        try:
            answer, call = method.with_call(f"u{i}".encode(), timeout=10)
            report(i, [answer], call)
        except grpc.RpcError as e:
            report(i, [], e)
elif mode == "count":
    call = channel.unary_stream("/echo.Echo/Count")(args[0].encode(), timeout=30)
    answers = []
    try:
        answers.extend(call)
    except grpc.RpcError:
        pass
    report(0, answers, call)
elif mode == "bidi":
    n, interval = int(args[0]), float(args[1])

    def messages():
        for i in range(n):
            yield f"m{i}".encode()
            time.sleep(interval)

    call = channel.stream_stream("/echo.Echo/Bidi")(messages(), timeout=60)
    answers = []
    try:
        for answer in call:
            answers.append(answer)
            if len(answers) == 1:
                print(json.dumps({"started": True}), flush=True)
    except grpc.RpcError:
        pass
    report(0, answers, call)
else:
    sys.exit(f"unknown mode {mode}")
