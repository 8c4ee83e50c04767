"""Send traces with the OpenTelemetry Python SDK's OTLP exporters.

Usage: send_traces.py <grpc|http> <endpoint> <count>

Each span is named "py-<protocol>-<i>" and carries the attributes, an event, a link and an
error status that tests/python_sdk.rs checks on the far side of the pipeline.
"""

import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags


def main() -> int:
    protocol, endpoint, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": "py-shop"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("py-client", "4.5.6")
    linked = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
    )
    for i in range(count):
        with tracer.start_as_current_span(
            f"py-{protocol}-{i}",
            kind=SpanKind.SERVER,
            links=[Link(linked)],
            attributes={"http.route": "/cart", "http.response.status_code": 503, "retry": True},
        ) as span:
            span.add_event("retrying", {"attempt": 2})
            span.set_status(Status(StatusCode.ERROR, "backend down"))
    ok = provider.force_flush(10_000)
    provider.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
