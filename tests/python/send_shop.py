"""Send a small shop's requests with the OpenTelemetry Python SDK's OTLP gRPC exporter.

Usage: send_shop.py <endpoint> <count>

Request i is a trace of three spans: a "py-frontend" SERVER span "GET /cart", its CLIENT
span "POST checkout", and the "py-checkout" SERVER span "PlaceOrder" that answers it (two
services, two tracer providers, one trace). Every 5th request fails in checkout (error
status on its client and server spans). Durations are set, not measured: checkout takes
3, 30 or 300 ms (i % 3), the client span 1 ms more and the frontend span 2 ms more, so
tests/python_sdk.rs knows what every counter and histogram bucket must say.
"""

import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def provider(service: str, endpoint: str) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    return p


def main() -> int:
    endpoint, count = sys.argv[1], int(sys.argv[2])
    frontend_p, checkout_p = provider("py-frontend", endpoint), provider("py-checkout", endpoint)
    frontend, checkout = frontend_p.get_tracer("shop"), checkout_p.get_tracer("shop")
    ms = 1_000_000
    for i in range(count):
        fail = i % 5 == 0
        took = [3, 30, 300][i % 3] * ms
        t0 = time.time_ns()
        root = frontend.start_span("GET /cart", kind=SpanKind.SERVER, start_time=t0,
                                   attributes={"http.route": "/cart"})
        ctx = trace.set_span_in_context(root)
        client = frontend.start_span("POST checkout", kind=SpanKind.CLIENT, context=ctx,
                                     start_time=t0)
        server = checkout.start_span("PlaceOrder", kind=SpanKind.SERVER,
                                     context=trace.set_span_in_context(client), start_time=t0,
                                     attributes={"http.route": "/order"})
        if fail:
            server.set_status(Status(StatusCode.ERROR, "out of stock"))
            client.set_status(Status(StatusCode.ERROR, "checkout failed"))
        server.end(end_time=t0 + took)
        client.end(end_time=t0 + took + ms)
        root.end(end_time=t0 + took + 2 * ms)
    ok = frontend_p.force_flush(10_000) and checkout_p.force_flush(10_000)
    frontend_p.shutdown()
    checkout_p.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
