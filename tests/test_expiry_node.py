"""Expiry through a real ``salvo node``: a traffic class's ``expire_after`` applies to its
jobs, and a job's lifetime counts from its ``send_after`` (docs/protocol.md).

Against a destination that defers one address (451 at RCPT), a ``marketing`` job (class
expiry 2 s) ends ``expired`` after a retry or two while a ``default`` job (5 days) to the
same address stays ``deferred``; a job with ``send_after`` 3 s ahead and ``expires_in``
1 s is still attempted (and delivered) when its time comes.
"""

from __future__ import annotations

import time
from pathlib import Path

from nodeutil import AioSink, NodeSetup, final_states, job, running_node, wait_for

from salvo.client import Producer

BOUND = 60.0  # seconds; the class expiry under test is 2 s, the default 5 days

MARKETING = """
[traffic.marketing]
first_retry = "1s"
max_retry = "1s"
expire_after = "2s"
"""


def test_class_expiry_and_send_after_through_a_node(tmp_path: Path) -> None:
    with AioSink("127.0.0.2") as sink:
        sink.rcpt_replies["busy@example.org"] = "451 4.2.0 mailbox busy, try later"
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, extra=MARKETING)
        with running_node(setup):
            later = time.time() + 3.0
            jobs = [
                job("mkt", ["busy@example.org"], traffic="marketing"),
                job("dflt", ["busy@example.org"]),
                job("later", ["later@example.org"], send_after=later, expires_in=1.0),
            ]
            with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
                replies = {r.id: r for r in producer.submit_many(jobs)}
            assert {r.status for r in replies.values()} == {"accepted"}, replies
            mid = {job_id: r.accepted[0].message_id for job_id, r in replies.items()}

            def settled() -> dict[str, str]:
                states = final_states(setup.events())
                done = states.get(mid["mkt"]) in ("expired", "delivered", "bounced") and (
                    states.get(mid["later"]) in ("expired", "delivered", "bounced")
                )
                return states if done and states.get(mid["dflt"]) == "deferred" else {}

            states = wait_for(settled, BOUND, 0.1)
            last = {j: final_states(setup.events()).get(m) for j, m in mid.items()}
            assert states, f"not settled within {BOUND} s; last events: {last}"
            assert states[mid["mkt"]] == "expired"  # its class's 2 s, not the default 5 days
            assert states[mid["dflt"]] == "deferred"
            assert states[mid["later"]] == "delivered"  # not expired before its first attempt
            mkt = [e["type"] for e in setup.events() if e.get("message_id") == mid["mkt"]]
            assert mkt[0] == "accepted" and "deferred" in mkt, mkt  # it was tried first
        summary = setup.queue_states()
    assert summary.get("expired") == 1, summary
    assert summary.get("deferred") == 1, summary
    assert sink.by_message_id()[mid["later"]] == 1
