"""`genai bench`: load generation and side-by-side benchmarks of our gRPC services."""
