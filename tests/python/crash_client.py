"""A service instrumented with the OpenTelemetry Python SDK, for tests/crash.rs.

Usage: crash_client.py <grpc endpoint> <seconds> <service name> <seed>

For <seconds> it makes traces of four spans (a server root and three children): one in
ten has an error on a child, one in ten has a root that lasted 3 s, the rest are plain.
They go out through the SDK's BatchSpanProcessor and OTLP/gRPC exporter. Every batch the
collector acknowledged is printed, one line per span:

    ACK <trace id hex> <span id hex> <error|slow|plain>

so the test knows exactly what the collector said it has.
"""

import random
import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode


class Recording(SpanExporter):
    """Exports through `inner` and prints what was acknowledged."""

    def __init__(self, inner, kinds):
        self.inner = inner
        self.kinds = kinds

    def export(self, spans):
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            lines = []
            for s in spans:
                ctx = s.get_span_context()
                kind = self.kinds.get(ctx.trace_id, "plain")
                lines.append(f"ACK {ctx.trace_id:032x} {ctx.span_id:016x} {kind}")
            print("\n".join(lines), flush=True)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def main() -> int:
    endpoint, seconds, service, seed = (
        sys.argv[1],
        float(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]),
    )
    rng = random.Random(seed)
    kinds = {}
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=3)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(
            Recording(exporter, kinds),
            schedule_delay_millis=100,
            max_export_batch_size=128,
            max_queue_size=20000,
        )
    )
    tracer = provider.get_tracer("crash-client")
    until = time.time() + seconds
    while time.time() < until:
        roll = rng.random()
        kind = "error" if roll < 0.1 else "slow" if roll < 0.2 else "plain"
        start = time.time_ns() - (3_000_000_000 if kind == "slow" else 20_000_000)
        root = tracer.start_span("GET /checkout", kind=SpanKind.SERVER, start_time=start)
        kinds[root.get_span_context().trace_id] = kind
        ctx = trace.set_span_in_context(root)
        for i in range(3):
            child = tracer.start_span(f"step-{i}", context=ctx, start_time=start + i * 1000)
            if kind == "error" and i == 1:
                child.set_status(Status(StatusCode.ERROR, "payment declined"))
            child.end(end_time=start + i * 1000 + 500_000)
        root.end(end_time=time.time_ns())
        time.sleep(0.02)
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
