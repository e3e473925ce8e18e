"""pomocore's benchmarks: the harness (`python -m benchmarks`, `make bench`) and the
standalone measurements (`python -m benchmarks.bench_classifier`, ...), run from the
repository root of a checkout. Not part of the installed package: see README.md here.

Modules of the harness: options (what a session runs), protocol (parent ↔ consumer
process), variants (the consumers a–h), llm_path (h's session flow: the LLM path),
measure (what is measured and how), session (orchestration), report (summary, tables,
JSON), plots, cli.
"""
