"""`python -m benchmarks.reader` runs end to end on small sizes and reports every query
on the servers it finds (the figures themselves are benchmarks/README.md's)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.reader import QUERIES, main


def test_reader_benchmark_reports_every_query(tmp_path: Path) -> None:
    out = tmp_path / "reader.json"
    report = main(["--members", "500", "--calls", "20", "--rounds", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == report
    assert "valkey" in report["servers"]
    assert report["servers"]["valkey"]["withscore"] is True
    for found in report["servers"].values():
        assert set(found["queries"]) == set(QUERIES)
        for q in found["queries"].values():
            assert q["ours_rps"] > 0 and q["plain_rps"] > 0 and q["client_cpu_ratio"] > 0


def test_reader_benchmark_over_shards() -> None:
    """--shards 6: ours reads six shard keys of the same members, plain the one key."""
    report = main(["--members", "500", "--calls", "20", "--rounds", "1", "--servers", "valkey",
                   "--shards", "6"])  # fmt: skip
    found = report["servers"]["valkey"]
    assert report["shards"] == found["shards"] == 6
    assert set(found["queries"]) == set(QUERIES)
