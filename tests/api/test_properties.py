"""Properties: no client input makes the API answer 500, on the real parsers and pipeline."""

from __future__ import annotations

import io
import json
import logging

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ticketmail.api.handler import ApiHandler, Request
from ticketmail.api.keys import InMemoryKeyStore, issue_key
from ticketmail.api.wsgi import make_wsgi_app
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.pipeline import Pipeline

STORE = InMemoryKeyStore()
KEY = issue_key(STORE, networks=["127.0.0.1"], permissions=["create_tickets", "submit_email", "run_cron"]).secret
HANDLER = ApiHandler(Pipeline(InMemoryBackend()), STORE, cron=lambda: None, max_body=32 * 1024)

PATHS = st.one_of(
    st.sampled_from(["/api/tickets.json", "/api/tickets.xml", "/api/tickets.email", "/api/tasks/cron"]),
    st.text(max_size=40),
)
METHODS = st.one_of(st.sampled_from(["POST", "GET", "PUT", "post"]), st.text(max_size=10))
header_names = st.one_of(
    st.sampled_from(["Content-Type", "Content-Length", "Accept", "X-API-Key", "Idempotency-Key"]), st.text(max_size=20)
)
HEADERS = st.lists(st.tuples(header_names, st.text(max_size=60)), max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values,
        "email": st.one_of(st.just("a@example.com"), json_values),
        "subject": json_values,
        "message": json_values,
        "attachments": json_values,
        "phone": json_values,
        "alert": json_values,
    },
)
valid_json = st.builds(
    lambda subject, message: json.dumps(
        {"name": "N", "email": "n@example.com", "subject": subject, "message": message}
    ).encode(),
    st.text(max_size=80),
    st.text(max_size=200),
)
BODIES = st.one_of(
    valid_json,
    st.binary(max_size=2048),
    fields.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda d: json.dumps(d).encode()),
    st.text(max_size=300).map(
        lambda t: f"<ticket><name>{t}</name><email>a@b.c</email></ticket>".encode("utf-8", "replace")
    ),
    st.text(max_size=500).map(lambda t: ("From: a@b.c\r\nSubject: x\r\n\r\n" + t).encode("utf-8", "surrogatepass")),
)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.CRITICAL, logger="ticketmail")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=METHODS, path=PATHS, headers=HEADERS, body=BODIES, with_key=st.booleans(), stream=st.booleans())
def test_no_client_input_gives_a_500(method, path, headers, body, with_key, stream):
    if with_key:
        headers = [*headers, ("X-API-Key", KEY)]
    request = Request(method, path, headers, io.BytesIO(body) if stream else body, "127.0.0.1")
    response = HANDLER(request)
    event(f"status {response.status}")
    assert 200 <= response.status < 500, (response.status, response.body)
    if response.status >= 400:
        assert response.body, "an error must name the problem"


ROUTES = st.sampled_from(["/api/tickets.json", "/api/tickets.xml", "/api/tickets.email"])
BODY_HEADERS = st.lists(
    st.tuples(
        st.sampled_from(["Content-Type", "Content-Length", "Accept", "Idempotency-Key"]),
        st.one_of(
            st.sampled_from(["application/json", "application/xml", "message/rfc822", "0", "9" * 5000, "q=nan"]),
            st.text(max_size=40),
        ),
    ),
    max_size=3,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=ROUTES, headers=BODY_HEADERS, body=BODIES, stream=st.booleans())
def test_authenticated_bodies_never_give_a_500(path, headers, body, stream):
    """Past routing and authentication: the parsers and the pipeline see arbitrary bytes."""
    request = Request("POST", path, [("X-API-Key", KEY), *headers], io.BytesIO(body) if stream else body, "127.0.0.1")
    response = HANDLER(request)
    event(f"status {response.status}")
    assert 200 <= response.status < 500, (response.status, response.body)
    if response.status >= 400:
        assert response.body, "an error must name the problem"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    body=BODIES,
    ctype=st.text(max_size=40),
    length=st.one_of(st.none(), st.text(max_size=12)),
    accept=st.text(max_size=40),
)
def test_wsgi_environ_never_gives_a_500(body, ctype, length, accept):
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/tickets.json",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": ctype,
        "HTTP_ACCEPT": accept,
        "HTTP_X_API_KEY": KEY,
        "wsgi.input": io.BytesIO(body),
    }
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = int(status.split()[0])

    b"".join(make_wsgi_app(HANDLER)(environ, start_response))
    assert seen["status"] < 500
