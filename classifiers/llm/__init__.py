"""LLM fallback for the keys patterns cannot decide; see docs/llm.md.

The consumer builds one `resolver.LLMResolver.from_settings(...)` per process, calls
`resolve(keys)` once per batch and runs `reclassifier.Reclassifier(...).run(stop)` in the
background. Import the modules themselves: this package re-exports nothing, so that
`learning` (used by `pomocore patterns learned`) loads without the openai client.
"""
