"""Sample campaigns shared by the demo and the benchmarks: realistic personalized messages.

``campaign(size)`` gives the template fields of a newsletter whose rendered message is about
``size`` bytes (multipart/alternative, about 10 header fields, 5 placeholders);
``recipients(n)`` gives ``n`` recipients with personal variables, some of them non-ASCII.
"""

from __future__ import annotations

from collections.abc import Iterator

FROM = "Acme News <news@acme.example>"
SUBJECT = "{{ first }}, your {{ month }} picks are here"
HEADERS = {
    "Reply-To": "Acme Support <support@acme.example>",
    "List-Unsubscribe": (
        "<https://acme.example/u/{{ token }}>, <mailto:unsub-{{ token }}@acme.example>"
    ),
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    "Feedback-ID": "spring:newsletter:acme",
    "X-Campaign": "spring-{{ month }}",
}

_TEXT_INTRO = """Hello {{ first }},

Here is what we picked for you in {{ month }}. Your member number is {{ member }}.
"""
_TEXT_ITEM = """
* Item {n}: a hand-made ceramic mug, glazed in deep blue, 350 ml.
  Dishwasher safe. Now 12.90 EUR instead of 15.00 EUR.
  https://acme.example/p/{n}?u={{{{ token }}}}
"""
_TEXT_OUTRO = """
You receive this because you subscribed at acme.example.
Unsubscribe: https://acme.example/u/{{ token }}
"""
_HTML_INTRO = """<!doctype html>
<html><head><meta charset="utf-8"><title>Your picks</title></head>
<body style="font-family: Helvetica, Arial, sans-serif; color: #222;">
<h1 style="font-size: 20px;">Hello {{ first }},</h1>
<p>Here is what we picked for you in {{ month }}. Member number: <b>{{ member }}</b>.</p>
<table role="presentation" width="100%" cellpadding="8">
"""
_HTML_ITEM = """<tr><td><a href="https://acme.example/p/{n}?u={{{{ token }}}}">
<img src="https://cdn.acme.example/img/{n}.jpg" width="120" alt="Item {n}"></a></td>
<td><b>Item {n}</b>: a hand-made ceramic mug, glazed in deep blue, 350 ml. Dishwasher safe.<br>
Now <b>12.90 EUR</b> instead of <s>15.00 EUR</s>.</td></tr>
"""
_HTML_OUTRO = """</table>
<p style="font-size: 11px; color: #777;">You receive this because you subscribed at acme.example.
<a href="https://acme.example/u/{{ token }}">Unsubscribe</a></p>
</body></html>
"""

SIZES = {"4k": (4, 6), "100k": (110, 250)}  # (text items, html items)


def campaign(size: str = "4k") -> dict:
    """Template fields (``from_``, ``subject``, ``text``, ``html``, ``headers``) for a size."""
    text_items, html_items = SIZES[size]
    text = _TEXT_INTRO + "".join(_TEXT_ITEM.format(n=i) for i in range(text_items)) + _TEXT_OUTRO
    html = _HTML_INTRO + "".join(_HTML_ITEM.format(n=i) for i in range(html_items)) + _HTML_OUTRO
    return {"from_": FROM, "subject": SUBJECT, "text": text, "html": html, "headers": HEADERS}


_FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eva", "Fatima", "Günther", "Hana", "Ivan", "Jürgen"]
_LAST = ["Smith", "Müller", "Nguyen", "Rossi", "Kowalski", "García", "O'Brien", "Søren"]
_MONTHS = ["April", "May", "June"]


def recipients(n: int, domain: str = "example.org") -> Iterator[tuple[str, dict]]:
    """``n`` recipients as (address, variables), deterministic."""
    for i in range(n):
        first = _FIRST[i % len(_FIRST)]
        last = _LAST[i % len(_LAST)]
        to = f"{first} {last} <user{i}@{domain}>"
        yield (
            to,
            {
                "first": first,
                "month": _MONTHS[i % len(_MONTHS)],
                "member": f"M-{100000 + i}",
                "token": f"{i:08x}{(i * 2654435761) % 2**32:08x}",
            },
        )


_RICH_TEXT = """Hello {{ first | default("there") | title }},
{% if vip %}
As a VIP member ({{ member }}) you get free shipping on this order.
{% endif %}
Your order {{ order.id }} of {{ order.items | length }} items:
{% for item in order.items %}
{{ loop.index }}. {{ item.name }}, {{ item.qty }} x {{ item.price | format_number }} EUR
   https://acme.example/p/{{ item.sku }}?u={{ token | urlencode }}
{%- if loop.last %}

That is all.{% endif %}
{% endfor %}
{% if order.total > 100 %}Your total of {{ order.total | round(2) }} EUR qualifies for a gift.
{% else %}Spend a little more for a gift.
{% endif %}
Unsubscribe: https://acme.example/u/{{ token }}
"""
_RICH_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Your order</title></head>
<body style="font-family: Helvetica, Arial, sans-serif; color: #222;">
<h1 style="font-size: 20px;">Hello {{ first | default("there") | title }},</h1>
{% if vip -%}
<p style="background: #fe9; padding: 8px;">As a VIP member (<b>{{ member }}</b>) you get
free shipping on this order.</p>
{%- endif %}
<p>Your order <b>{{ order.id }}</b> of {{ order.items | length }} items:</p>
<table role="presentation" width="100%" cellpadding="8">
{% for item in order.items -%}
<tr style="background: {% if loop.first %}#ffe{% else %}#fff{% endif %};">
<td><a href="https://acme.example/p/{{ item.sku }}?u={{ token | urlencode }}">
<img src="https://cdn.acme.example/img/{{ item.sku }}.jpg" width="120"
 alt="{{ item.name }}"></a></td>
<td><b>{{ loop.index }}. {{ item.name }}</b>: a hand-made piece, glazed in deep blue.
Dishwasher safe.<br>{{ item.qty }} x <b>{{ item.price | format_number }} EUR</b>
{%- if item.qty > 1 %} ({{ item.qty }} pieces){% endif %}</td></tr>
{% endfor -%}
</table>
{% if order.total > 100 -%}
<p>Your total of <b>{{ order.total | round(2) }} EUR</b> qualifies for a gift.</p>
{%- else -%}
<p>Spend a little more for a gift.</p>
{%- endif %}
<p style="font-size: 11px; color: #777;">You receive this because you subscribed at
acme.example. <a href="https://acme.example/u/{{ token }}">Unsubscribe</a></p>
<p style="font-size: 11px; color: #777;">Prices include VAT. Returns are free within 30 days
of delivery: reply to this message or visit https://acme.example/returns with your order
number at hand. Acme Ceramics, 1 Kiln Street, 12345 Potterton.</p>
</body></html>
"""
_ITEMS = ["Ceramic mug", "Tea pot", "Saucer set", "Bowl, large", "Vase", "Jug", "Plate"]


def rich_campaign() -> dict:
    """Template fields of a ~4 KB order message in the template language: a loop over the
    order's items (5 per recipient), two conditionals and filters (the hot-path bench)."""
    fields = campaign("4k")
    fields.update(
        subject="{{ first | default('Hi') }}, your order {{ order.id }} has shipped",
        text=_RICH_TEXT,
        html=_RICH_HTML,
    )
    return fields


def rich_recipients(n: int, domain: str = "example.org") -> Iterator[tuple[str, dict]]:
    """``n`` recipients of :func:`rich_campaign` with 5 order items each, deterministic."""
    for i, (to, variables) in enumerate(recipients(n, domain)):
        items = [
            {
                "name": _ITEMS[(i + k) % len(_ITEMS)],
                "sku": f"S{(i * 7 + k) % 1000:04d}",
                "qty": 1 + (i + k) % 3,
                "price": 1290 + 100 * k if k % 2 else 12.9 + k,
            }
            for k in range(5)
        ]
        total = sum(it["qty"] * it["price"] for it in items)
        variables = {
            **variables,
            "vip": i % 4 == 0,
            "order": {"id": f"A-{20000 + i}", "items": items, "total": total},
        }
        yield to, variables


def jobs(
    run: str,
    messages: int,
    per_job: int,
    *,
    size: str = "4k",
    domains: list[str] | None = None,
    **fields: object,
) -> list[dict]:
    """``messages`` personalized recipients of the sample campaign as producer jobs (the
    protocol's dict form), ``per_job`` to a job, ids ``RUN-N``; with ``domains`` the
    recipients' domains take turns (one domain per provider). ``fields`` (campaign,
    tenant, traffic...) are added to every job."""
    content = campaign(size)
    template = {
        "from": content["from_"],
        "subject": content["subject"],
        "text": content["text"],
        "html": content["html"],
        "headers": content["headers"],
        **fields,
    }
    people = []
    for i, (to, variables) in enumerate(recipients(messages)):
        if domains:
            to = to.replace("@example.org", f"@{domains[i % len(domains)]}")
        people.append({"to": to, "vars": variables})
    return [
        {**template, "id": f"{run}-{n}", "recipients": people[i : i + per_job]}
        for n, i in enumerate(range(0, messages, per_job))
    ]
