"""Helpers shared by the test packages, one job a module (fixtures stay in conftest.py
files and build on these):

- servers: start a server for as long as a fixture lasts; Settings pointed at others
- streams: publish like a producer; the group's lag and pending; the dead letters
- expected: what the servers must hold, computed without pomocore; the assertions
- consumer: a real consumer in the test's event loop (drain, running_consumer)
- processes: `pomocore run` and other `pomocore` commands as child processes
- waiting: wait for a condition with a deadline (plain and async)
- patterns: classifiers from a few pattern documents, or the shipped defaults
- resolver: LLM resolvers wired to the fake server, for the LLM tests
- fake_llm: a scriptable OpenAI-compatible server
- fault_proxy: a TCP proxy that injects latency, resets and blackholes
- redis_faults: Redis answering errors (READONLY, MASTERDOWN, BUSY, OOM) for a while
- http_client: GET a status and body with the standard library
"""
