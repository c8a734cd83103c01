"""The bulk-sender rules at intake (salvo.core.bulk): pure, through the spool, in config."""

from __future__ import annotations

import time

import msgspec
import pytest

from salvo.core.bulk import BulkRules, job_problem
from salvo.core.config import ConfigError, parse_config
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Spool, SpoolConfig

RULES = BulkRules(
    {"default": (False, False), "news": (True, False), "promo": (True, True)},
    frozenset({"acme.example"}),
)
ONE_CLICK = {
    "List-Unsubscribe": "<https://u.acme.example/u/x>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def job(traffic: str = "news", sender: str = "news@acme.example", **kw) -> Job:
    return Job(
        id="j1",
        from_=sender,
        subject="Hi",
        text="Hello",
        traffic=traffic,
        recipients=[Recipient(to="ann@example.org")],
        **kw,
    )


def raw(headers: str) -> str:
    return f"From: Acme <news@acme.example>\r\nSubject: Hi\r\n{headers}\r\nHello\r\n"


def test_a_class_that_is_not_bulk_is_not_checked() -> None:
    assert job_problem(RULES, job("default", sender="x@other.example"), "other.example") is None
    # a class name no class has is the default class
    assert job_problem(RULES, job("nosuch", sender="x@other.example"), "other.example") is None


def test_bulk_needs_a_dkim_key_for_the_from_domain() -> None:
    problem = job_problem(RULES, job(headers=ONE_CLICK, sender="x@other.example"), "other.example")
    assert problem is not None
    assert "no DKIM key for the From domain 'other.example'" in problem
    assert '[dkim."other.example"]' in problem
    # a subdomain of a signed domain is not signed by salvo (d= is the From domain)
    assert job_problem(RULES, job(headers=ONE_CLICK), "mail.acme.example") is not None


def test_bulk_needs_one_click_unsubscribe() -> None:
    problem = job_problem(RULES, job(), "acme.example")
    assert problem is not None and "no one-click unsubscribe" in problem
    assert "list_unsubscribe = true" in problem
    assert job_problem(RULES, job(headers=ONE_CLICK), "acme.example") is None
    lower = {k.lower(): v for k, v in ONE_CLICK.items()}
    assert job_problem(RULES, job(headers=lower), "acme.example") is None
    wrong = {**ONE_CLICK, "List-Unsubscribe-Post": "yes"}
    assert job_problem(RULES, job(headers=wrong), "acme.example") is not None
    only_url = {"List-Unsubscribe": ONE_CLICK["List-Unsubscribe"]}
    assert job_problem(RULES, job(headers=only_url), "acme.example") is not None
    # the class adds both headers itself
    assert job_problem(RULES, job("promo"), "acme.example") is None


def test_a_raw_message_carries_its_own_headers() -> None:
    def of(text: str) -> Job:
        return Job(
            id="r", from_="news@acme.example", traffic="promo", raw=text,
            recipients=[Recipient(to="ann@example.org")],
        )  # fmt: skip

    headers = "".join(f"{k}: {v}\r\n" for k, v in ONE_CLICK.items())
    assert job_problem(RULES, of(raw(headers)), "acme.example") is None
    missing = job_problem(RULES, of(raw("")), "acme.example")
    assert missing is not None and "a raw message must carry both headers" in missing
    other = of(raw(headers).replace("news@acme.example", "news@other.example"))
    assert "'other.example'" in (job_problem(RULES, other, "acme.example") or "")


def test_the_spool_rejects_a_job_that_breaks_the_rules(tmp_path) -> None:
    spool = Spool.open(tmp_path / "spool", SpoolConfig(bulk=RULES))
    try:
        bad, good, plain = spool.submit_many(
            [
                job(),
                msgspec.structs.replace(job(headers=ONE_CLICK), id="j2"),
                msgspec.structs.replace(job("default", sender="x@other.example"), id="j3"),
            ],
            time.time(),
        )
    finally:
        spool.close()
    assert bad.reply.status == "rejected" and "one-click" in (bad.reply.error or "")
    assert good.reply.status == plain.reply.status == "accepted"


def test_strict_is_for_bulk_classes() -> None:
    with pytest.raises(ConfigError, match=r"\[traffic.news\] strict: applies to bulk"):
        parse_config("[traffic.news]\nstrict = true\n")
    config = parse_config("[traffic.news]\nbulk = true\nstrict = true\n")
    rules = BulkRules.from_config(config)
    assert rules is not None and rules.of("news") == (True, False)
    assert BulkRules.from_config(parse_config("")) is None
