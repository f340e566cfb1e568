"""`genai eval`: answer quality of every feature, measured on labelled data sets.

The harness is a black-box gRPC client: it talks to a server only through the generated
stubs (`genai.feed.v1`, `genai.messaging.v1`, `genai.search.v1`), so it measures exactly
what a caller gets. Data sets live in `data/` (JSONL, one labelled case a line, each in
the `dev` split that prompts are tuned on or the `test` split that is only reported).
"""
