"""The cluster's pure parts: key names, claim values and decisions, stream ids, the
snapshot decision, the suppression outbox and the applying of remote changes in LMDB."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from salvo.core import cluster as cl
from salvo.core import cluster_store as cs
from salvo.core.config import ConfigError, parse_config
from salvo.core.protocol import Accepted, Reply
from salvo.core.spool_env import Store
from salvo.core.suppression import SuppressionStore


def test_keys_are_prefixed_and_binary_safe() -> None:
    keys = cl.ClusterKeys("salvo")
    assert keys.supp_stream == b"salvo:supp:stream"
    assert keys.job("acme", "j-1") == b"salvo:job:acme\0j-1"
    assert keys.job("", "é") == "salvo:job:\0é".encode()


def test_claims_decide() -> None:
    reply = Reply(id="j", status="accepted", accepted=[Accepted("a@x.org", "<m@x>")])
    assert cl.decide(cl.claim_value("a"), "a") == cl.Decision("proceed")
    assert cl.decide(cl.claim_value("a"), "b") == cl.Decision("retry", "a")
    assert cl.decide(cl.reply_value("a", reply), "a") == cl.Decision("proceed")
    assert cl.decide(cl.reply_value("a", reply), "b") == cl.Decision("replay", "a", reply)
    assert cl.decide(None, "b").action == "retry"
    assert cl.decide(b"rgarbage", "b").action == "retry"
    assert cl.decide(b"", "b").action == "retry"


@given(st.binary(max_size=64))
def test_decide_never_raises(value: bytes) -> None:
    assert cl.decide(value, "n").action in ("proceed", "retry", "replay")


def test_stream_ids_and_snapshot_decision() -> None:
    assert cl.stream_id(b"10-2") < cl.stream_id("11-0") < cl.stream_id("11-1")
    mine = cl.StreamState(b"E", b"5-0")
    assert cl.needs_snapshot(cl.StreamState(b"", b""), b"E", None, b"0-0")
    assert cl.needs_snapshot(mine, b"F", b"1-0", b"9-0")  # another Redis
    assert not cl.needs_snapshot(mine, b"E", b"1-0", b"9-0")
    assert not cl.needs_snapshot(mine, b"E", b"5-0", b"9-0")  # ours is the first kept
    assert cl.needs_snapshot(mine, b"E", b"5-1", b"9-0")  # ours was trimmed
    assert not cl.needs_snapshot(mine, b"E", None, b"5-0")  # empty, nothing missed
    assert cl.needs_snapshot(mine, b"E", None, b"6-0")


def test_ops_round_trip_and_bad_ones() -> None:
    store_entry = SuppressionStore.make_entry(None, "a@x.org", created=1.0)  # type: ignore[arg-type]
    ops = [cl.SuppOp("a", store_entry[0], store_entry[1]), cl.SuppOp("r", b"\0ab@x.org")]
    assert cl.decode_ops(cl.encode_ops(ops)) == ops
    with pytest.raises(msgspec.ValidationError):
        cl.decode_ops(cl.encode_ops([cl.SuppOp("a", b"k")]))
    with pytest.raises(msgspec.ValidationError):
        cl.decode_ops(cl.encode_ops([cl.SuppOp("x", b"k")]))


@given(st.binary(max_size=200))
def test_decode_ops_fails_typed(raw: bytes) -> None:
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        cl.decode_ops(raw)


def test_outbox_only_in_a_cluster(tmp_path) -> None:
    store = Store(tmp_path / "d")
    supp = SuppressionStore(store)
    supp.add(["alone@x.org"], now=1.0)
    assert store.read(lambda txn: cs.outbox_read_in(txn, store, 10)) == []
    store.write(lambda txn: cs.set_on_in(txn, store, True))
    supp.add(["one@x.org", "two@x.org"], now=2.0, reason="complaint")
    supp.remove(["alone@x.org"])
    box = store.read(lambda txn: cs.outbox_read_in(txn, store, 10))
    ops = {cs.decode_outbox(raw).op for _, raw in box}
    assert len(box) == 3 and ops == {"a", "r"}
    assert store.read(lambda txn: cs.outbox_size(txn, store)) == 3
    # A change after the read keeps its entry: it was not published yet.
    supp.add(["one@x.org"], now=3.0, reason="unsubscribe")
    assert store.write(lambda txn: cs.outbox_done_in(txn, store, box)) == 2
    left = store.read(lambda txn: cs.outbox_read_in(txn, store, 10))
    assert [cs.decode_outbox(raw).entry.reason for _, raw in left] == ["unsubscribe"]
    store.write(lambda txn: cs.set_on_in(txn, store, False))
    assert store.read(lambda txn: cs.outbox_read_in(txn, store, 10)) == []
    store.close()


def test_apply_remote_changes_in_order_without_publishing(tmp_path) -> None:
    store = Store(tmp_path / "d")
    supp = SuppressionStore(store)
    store.write(lambda txn: cs.set_on_in(txn, store, True))
    k1, e1 = supp.make_entry("a@x.org", created=1.0, reason="hard-bounce")
    k2, e2 = supp.make_entry("b@x.org", created=1.0, expires=9.0)
    ops = [cl.SuppOp("a", k1, e1), cl.SuppOp("a", k2, e2), cl.SuppOp("r", k2)]
    state = cl.StreamState(b"E", b"7-0")
    added, removed = store.write(lambda txn: cs.apply_in(txn, supp, ops, state))
    assert (added, removed) == (2, 1)
    hits = supp.check_many(["a@x.org", "b@x.org"], now=2.0)
    assert [h and h.reason for h in hits] == ["hard-bounce", None]
    assert store.read(lambda txn: cs.outbox_read_in(txn, store, 10)) == []
    assert store.read(lambda txn: cs.stream_state_in(txn, store)) == state
    store.close()


def test_cluster_config() -> None:
    alone = parse_config(b"")
    assert alone.cluster.redis == "" and alone.node_name
    config = parse_config(
        b'[cluster]\nredis = "redis://127.0.0.1:7000/1"\nnode_name = "a"\nclaim_ttl = "2h"\n'
    )
    assert config.node_name == "a" and config.cluster.when_down == "retry"
    for bad in (
        b'[cluster]\nredis = "http://x"\n',
        b'[cluster]\nnode_name = "a b"\n',
        b'[cluster]\nclaim_ttl = "10s"\n',
        b'[cluster]\nwhen_down = "maybe"\n',
        b'[cluster]\nprefix = "a b"\n',
        b"[cluster]\nstream_max = 5\n",
        b"[cluster]\nnope = 1\n",
    ):
        with pytest.raises(ConfigError, match=r"\[cluster\]|cluster"):
            parse_config(bad)


def test_cluster_metrics_are_exposed() -> None:
    from types import SimpleNamespace

    from prometheus_client import generate_latest

    from salvo.actors.cluster import _collector
    from salvo.actors.metrics import Metrics

    metrics = Metrics()
    link = SimpleNamespace(up=True, round_trips=7, failures=1)
    sync = SimpleNamespace(outbox_waiting=2, applied=3, snapshot_applied=4, published=5)
    claims = SimpleNamespace(counts={"claimed": 6, "replay": 1})
    metrics.registry.register(_collector(link, sync, claims))
    text = generate_latest(metrics.registry).decode()
    for line in (
        "salvo_cluster_redis_up 1.0",
        "salvo_cluster_redis_round_trips_total 7.0",
        "salvo_cluster_redis_failures_total 1.0",
        "salvo_cluster_suppression_outbox 2.0",
        'salvo_cluster_suppressions_applied_total{source="snapshot"} 4.0',
        "salvo_cluster_suppressions_published_total 5.0",
        'salvo_cluster_claims_total{result="claimed"} 6.0',
    ):
        assert line in text, line
