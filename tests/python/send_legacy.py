"""Send spans with real Jaeger and Zipkin client libraries.

Usage: send_legacy.py <mode> <host:port>

Modes:
  jaeger-compact  OpenTelemetry's Jaeger Thrift exporter to an agent (compact Thrift, UDP)
  jaeger-binary   the same exporter's agent client speaking binary Thrift (UDP, as the
                  Jaeger client libraries do on port 6832)
  jaeger-http     the same exporter to a collector (binary Thrift over HTTP)
  zipkin-v2       py_zipkin, Zipkin v2 JSON over HTTP
  zipkin-v1       py_zipkin, Zipkin v1 JSON over HTTP

Each mode sends one trace: a server span "checkout" and its client child "charge", which
fails ("card declined") and carries order.id=42. The service is "legacy-<mode>".
"""

import sys
import urllib.request

# py_zipkin logs a failed send and carries on: the failures are kept here and fail the run.
FAILURES = []


def jaeger(mode: str, address: str) -> None:
    from opentelemetry.exporter.jaeger.thrift import JaegerExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    host, port = address.rsplit(":", 1)
    if mode in ("jaeger-compact", "jaeger-binary"):
        exporter = JaegerExporter(agent_host_name=host, agent_port=int(port))
        if mode == "jaeger-binary":
            from opentelemetry.exporter.jaeger.thrift.gen.agent import Agent
            from thrift.protocol import TBinaryProtocol

            udp = exporter._agent_client  # pylint: disable=protected-access
            udp.client = Agent.Client(iprot=TBinaryProtocol.TBinaryProtocol(trans=udp.buffer))
    else:
        exporter = JaegerExporter(collector_endpoint=f"http://{address}/api/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": f"legacy-{mode}"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("legacy-client", "1.0")
    with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT) as child:
            child.set_attribute("order.id", 42)
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "card declined"))
    provider.shutdown()


def zipkin(mode: str, address: str) -> None:
    from py_zipkin import Encoding, Kind
    from py_zipkin.transport import BaseTransportHandler
    from py_zipkin.zipkin import zipkin_span

    version = "v2" if mode == "zipkin-v2" else "v1"
    url = f"http://{address}/api/{version}/spans"

    class Http(BaseTransportHandler):
        def get_max_payload_bytes(self):
            return None

        def send(self, payload):
            if isinstance(payload, str):
                payload = payload.encode()
            req = urllib.request.Request(
                url, data=payload, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req) as reply:
                    if reply.status != 202:
                        FAILURES.append(f"{url}: status {reply.status}")
            except Exception as e:  # noqa: BLE001 - any failure fails the run
                FAILURES.append(f"{url}: {e!r}")

    encoding = Encoding.V2_JSON if mode == "zipkin-v2" else Encoding.V1_JSON
    service = f"legacy-{mode}"
    with zipkin_span(
        service_name=service,
        span_name="checkout",
        transport_handler=Http(),
        sample_rate=100.0,
        encoding=encoding,
        kind=Kind.SERVER,
    ):
        with zipkin_span(service_name=service, span_name="charge", kind=Kind.CLIENT) as child:
            child.update_binary_annotations({"order.id": "42", "error": "card declined"})


def main() -> int:
    mode, address = sys.argv[1], sys.argv[2]
    if mode.startswith("jaeger"):
        jaeger(mode, address)
    else:
        zipkin(mode, address)
    for f in FAILURES:
        print(f, file=sys.stderr)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
