"""The dashboard in a real headless browser (Debian's chromium through its chromedriver,
driven by Selenium): a real node delivers two campaigns to an aiosmtpd sink; the page shows
the token form without a token and a clear message with a wrong one; with ``/#token=`` it
shows the numbers of ``/api/status`` and ``/api/kpis``, escapes names from producers, and
its Resume button ends a pause (checked over the API). A screenshot is kept as an artifact
(``$SALVO_ARTIFACTS``, default ``tests/artifacts/``). Every wait is bounded."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from pathlib import Path

import pytest
from nodeutil import AioSink, NodeSetup, free_port, job, running_node, wait_for

from salvo.client import Producer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BOUND = 60.0
SPRING, AUTUMN, AUTUMN_BOUNCED = 12, 8, 2
ODD = "<i>q&a</i>"  # a campaign name that would be markup if the page did not escape it

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian's chromium and chromium-driver (./dev.sh setup installs them)",
)


def _call(port: int, method: str, path: str, token: str, body: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, data, {"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    assert response.status == 200, (path, raw)
    return json.loads(raw)


def _browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1500",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _count(n: int) -> str:
    return f"{n:,}"


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _artifacts() -> Path:
    where = Path(os.environ.get("SALVO_ARTIFACTS") or Path(__file__).parent / "artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_dashboard_shows_the_api_numbers_and_resumes(tmp_path: Path, monkeypatch):
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    port = free_port()
    with AioSink("127.0.0.2") as sink:
        for i in range(AUTUMN_BOUNCED):
            sink.rcpt_replies[f"gone{i}@example.org"] = "550 5.1.1 no such user"
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            extra=f'\n[http]\nlisten = "127.0.0.1:{port}"\n',
        )
        autumn = [f"au{i}@example.org" for i in range(AUTUMN - AUTUMN_BOUNCED)]
        autumn += [f"gone{i}@example.org" for i in range(AUTUMN_BOUNCED)]
        with running_node(setup):
            token = (setup.root / "keys" / "http.token").read_text().strip()
            with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
                replies = list(
                    producer.submit_many(
                        [
                            job("s1", [f"sp{i}@example.org" for i in range(SPRING)], campaign=ODD),
                            job("a1", autumn, campaign="autumn"),
                        ]
                    )
                )
            assert {r.status for r in replies} == {"accepted"}

            def settled():
                s = _call(port, "GET", "/api/status", token)
                k = _call(port, "GET", "/api/kpis?window=1h", token)
                return s["queue"]["total"] == 0 and k["sent"] == SPRING + AUTUMN and s

            assert wait_for(settled, BOUND, 0.2), "the campaigns were not delivered"
            assert len(sink.snapshot()) == SPRING + AUTUMN - AUTUMN_BOUNCED
            for scope, name in (("campaign", "spring-2"), ("provider", "google")):
                _call(port, "POST", "/api/pause", token, {"scope": scope, "name": name})

            driver = _browser(tmp_path / "chromium-profile")
            try:
                base = f"http://127.0.0.1:{port}/"
                driver.set_page_load_timeout(30)

                def shown(element_id: str) -> bool:
                    return driver.find_element(By.ID, element_id).is_displayed()

                # No token: the form, nothing else.
                driver.get(base)
                assert wait_for(lambda: shown("login"), BOUND), "no token form"
                assert not shown("main")
                # A wrong token: a clear message, and the form again.
                driver.find_element(By.ID, "token-input").send_keys("not-the-token")
                driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
                error = driver.find_element(By.ID, "login-error")
                assert wait_for(lambda: "refused this token" in error.text, BOUND), error.text
                assert shown("login") and not shown("main")

                # The token in the fragment: the numbers render, the fragment leaves the URL.
                driver.get(f"{base}#token={token}")
                total = driver.find_element(By.ID, "tp-total")
                assert wait_for(lambda: shown("main") and total.text not in ("", "–"), BOUND)
                assert "token" not in driver.current_url

                status = _call(port, "GET", "/api/status", token)
                assert total.text == _count(status["throughput"]["delivered_since_start"])
                assert total.text == _count(SPRING + AUTUMN - AUTUMN_BOUNCED)
                assert driver.find_element(By.ID, "q-waiting").text == _count(
                    status["queue"]["states"]["waiting"]
                )
                assert driver.find_element(By.ID, "q-inflight").text == "0"

                for campaign, sent in ((ODD, SPRING), ("autumn", AUTUMN)):
                    k = _call(port, "GET", f"/api/kpis?campaign={_q(campaign)}&window=1h", token)
                    assert k["sent"] == sent
                    rows = [
                        tr
                        for tr in driver.find_elements(By.CSS_SELECTOR, "#campaigns-table tbody tr")
                        if tr.get_attribute("data-campaign") == campaign
                    ]
                    assert len(rows) == 1, campaign
                    cell = {
                        td.get_attribute("data-kpi"): td.text.split("\n")[0]
                        for td in rows[0].find_elements(By.CSS_SELECTOR, "td[data-kpi]")
                    }
                    assert cell["sent"] == _count(k["sent"])
                    assert cell["delivered"] == _count(k["delivered"])
                    assert cell["delivery_rate"] == _pct(k["delivery_rate"])
                    assert cell["hard_bounce_rate"] == _pct(k["hard_bounce_rate"])
                k = _call(port, "GET", "/api/kpis?tenant=acme&window=1h", token)
                tenant = driver.find_element(
                    By.CSS_SELECTOR, '#tenants-table tr[data-tenant="acme"]'
                )
                assert (
                    _count(k["sent"]) in tenant.text and _pct(k["hard_bounce_rate"]) in tenant.text
                )
                # Escaped: the odd name is text, not an <i> element.
                assert ODD in driver.find_element(By.ID, "campaigns-table").text
                assert not driver.find_elements(By.CSS_SELECTOR, "#campaigns-table i")

                # Providers and pauses as the API has them.
                provider_names = {
                    tr.get_attribute("data-provider")
                    for tr in driver.find_elements(By.CSS_SELECTOR, "#providers-table tbody tr")
                }
                assert provider_names == {p["name"] for p in status["providers"]}
                assert {("provider", "google"), ("campaign", "spring-2")} <= {
                    (p["scope"], p["name"]) for p in status["pauses"]
                }
                pause_rows = "#pauses-table tbody tr"
                assert wait_for(
                    lambda: len(driver.find_elements(By.CSS_SELECTOR, pause_rows)) == 2, 10
                )
                assert driver.find_element(By.ID, "alerts-empty").is_displayed()

                shot = _artifacts() / "dashboard.png"
                driver.save_screenshot(str(shot))
                print(f"dashboard screenshot: {shot}")

                # Resume the campaign from the page: the pause is gone from the API.
                row = driver.find_element(By.CSS_SELECTOR, '#pauses-table tr[data-name="spring-2"]')
                row.find_element(By.TAG_NAME, "button").click()

                def resumed() -> bool:
                    names = [p["name"] for p in _call(port, "GET", "/api/pauses", token)["pauses"]]
                    return names == ["google"]

                assert wait_for(resumed, BOUND, 0.2), "the Resume button did not resume"
                assert wait_for(
                    lambda: len(driver.find_elements(By.CSS_SELECTOR, pause_rows)) == 1, BOUND
                )
                console = driver.get_log("browser") if hasattr(driver, "get_log") else []
                # Script errors only: the wrong token's 401 is an expected network error.
                errors = [e for e in console if e["level"] == "SEVERE" and e["source"] != "network"]
                assert not errors, errors
            finally:
                driver.quit()
                shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _q(value: str) -> str:
    import urllib.parse

    return urllib.parse.quote(value, safe="")
