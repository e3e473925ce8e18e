"""The forwarder chaos run's checker finds every kind of violation it is there to find."""

from __future__ import annotations

import time

from tests.chaos.route import SHARDS, Published, check_routed, generate


def placed(published: list[Published]) -> dict[int, list[list[bytes]]]:
    """The shard streams as a correct forwarder leaves them."""
    out: dict[int, list[list[bytes]]] = {i: [] for i in range(SHARDS)}
    for p in published:
        out[p.shard].append(list(p.fields))
    return out


def test_a_correct_routing_passes_and_covers_every_shard() -> None:
    published = generate(seed=1, events=300, kit_events=60, now_s=time.time())
    found = placed(published)
    assert check_routed(published, found) == []
    assert all(found.values())
    assert {p.via for p in published} == {"contract", "kit"}
    assert any(p.fields[0] != b"userId" for p in published)  # some without a userId: shard 0


def test_loss_duplication_misplacement_changes_and_strangers_are_reported() -> None:
    published = generate(seed=2, events=50, kit_events=10, now_s=time.time())
    found = placed(published)
    lost, twice, moved, changed = published[3], published[7], published[11], published[55]
    found[lost.shard].remove(lost.fields)
    found[twice.shard].append(list(twice.fields))
    found[moved.shard].remove(moved.fields)
    found[(moved.shard + 1) % SHARDS].append(list(moved.fields))
    i = found[changed.shard].index(changed.fields)
    found[changed.shard][i] = [*changed.fields, b"extra", b"x"]
    found[0].append([b"n", b"999999"])
    found[1].append([b"userId", b"u"])  # no n at all
    violations = check_routed(published, found)
    assert [v.split(":")[0] for v in violations] == [
        "shard 1", "lost", "duplicated", "wrong shard", "changed", "never published"
    ]  # fmt: skip
