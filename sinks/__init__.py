"""Batched sinks: MongoDB documents and Redis leaderboards (which also acknowledges)."""
