"""Container health check: exit 0 only if the gRPC server answers SERVING.

Usage: python grpc_health_probe.py [ADDRESS] [SERVICE]
  ADDRESS defaults to 127.0.0.1:50051; SERVICE defaults to "" (the whole server; it is
  NOT_SERVING while the model loads and while the server drains after SIGTERM).
Needs only grpcio and grpcio-health-checking, which the image already has.
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    service = sys.argv[2] if len(sys.argv) > 2 else ""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=4
            )
    except grpc.RpcError as e:
        print(f"{address}: {e.code().name}", file=sys.stderr)
        return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    if not serving:
        print(
            f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}",
            file=sys.stderr,
        )
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
