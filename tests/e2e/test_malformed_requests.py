"""Every malformed request is a 4xx with a typed error (`errors[0].extensions.code`), and nothing
the client sends puts a traceback or an ERROR line in the API's log; over WebSocket, malformed
messages close the socket with 4400 (graphql-transport-ws) and the server carries on.

The inputs are generated (Hypothesis, and combinations of the ways a request can be wrong)
against a real `slotengine serve` whose whole log is read afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from slotengine.config import Settings
from slotengine.embedded import free_port
from tests.e2e.conftest import token
from tests.e2e.ws import PROTOCOL
from tests.processes import engine_env, kill_tree

REFUSED = {400, 405, 413, 415, 422}
QUERY = "{ __typename }"
SUBSCRIPTION = 'subscription { slotStatus(slotId: "00000000-0000-0000-0000-000000000000") { id } }'
EXAMPLES = hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A `slotengine serve` logging everything at INFO to a file: (base URL, log file)."""
    log = tmp_path_factory.mktemp("malformed") / "api.log"
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "slotengine.cli", "serve", "--port", str(port)],
            env={**engine_env(settings), "SLOTENGINE_LOG_LEVEL": "info", "SLOTENGINE_LOG_FORMAT": "json"},
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(base):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield base, log
        assert _healthy(base), "the API stopped answering"
        _assert_no_error_logged(log)
    finally:
        kill_tree(process, signal.SIGTERM)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _assert_no_error_logged(log: Path) -> None:
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    assert '"level": "error"' not in text and "ERROR" not in text, text[-4000:]


def _assert_typed_refusal(response: httpx.Response) -> None:
    assert response.status_code in REFUSED, (response.status_code, response.text[:300])
    code = response.json()["errors"][0]["extensions"]["code"]
    assert isinstance(code, str) and code.isupper(), response.text[:300]


def _post(base: str, body: bytes, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(f"{base}/graphql", content=body, headers=headers, timeout=30)


# ---- HTTP ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
not_objects = json_values.filter(lambda v: not isinstance(v, dict))
not_strings = json_values.filter(lambda v: not isinstance(v, str) and v is not None)


@EXAMPLES
@given(body=not_objects)
def test_a_body_that_is_no_json_object_is_refused(api: tuple[str, Path], body: object) -> None:
    _assert_typed_refusal(_post(api[0], json.dumps(body).encode()))


@EXAMPLES
@given(query=not_strings, variables=json_values, operation=json_values)
def test_operations_of_the_wrong_shape_are_refused(
    api: tuple[str, Path], query: object, variables: object, operation: object
) -> None:
    body: dict[str, Any] = {"query": query, "variables": variables, "operationName": operation}
    _assert_typed_refusal(_post(api[0], json.dumps(body).encode()))
    # A good query with variables that are no object, or an operation name it does not have.
    if not isinstance(variables, dict) and variables is not None:
        _assert_typed_refusal(_post(api[0], json.dumps({"query": QUERY, "variables": variables}).encode()))
    if operation is not None:
        named = {"query": "query Known { __typename }", "operationName": operation}
        _assert_typed_refusal(_post(api[0], json.dumps(named).encode()))


@EXAMPLES
@given(
    prefix=st.binary(max_size=20), bad=st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"])
)
def test_invalid_utf8_is_refused(api: tuple[str, Path], prefix: bytes, bad: bytes) -> None:
    body = b'{"query": "{ __typename }", "variables": {"x": "' + prefix.hex().encode() + bad + b'"}}'
    _assert_typed_refusal(_post(api[0], body))


@pytest.mark.parametrize(
    ("depth", "opener", "closer"),
    [
        (depth, *pair)
        for depth, pair in itertools.product([1_000, 10_000, 30_000], [("[", "]"), ('{"a":', "}")])
    ],
)
def test_deeply_nested_json_is_refused(api: tuple[str, Path], depth: int, opener: str, closer: str) -> None:
    nested = opener * depth + "1" + closer * depth
    body = f'{{"query": "{{ __typename }}", "variables": {{"v": {nested}}}}}'.encode()
    _assert_typed_refusal(_post(api[0], body))


@pytest.mark.parametrize("digits", [4_301, 5_000, 20_000])
@pytest.mark.parametrize("sign", ["", "-"])
def test_integers_of_thousands_of_digits_are_refused(api: tuple[str, Path], digits: int, sign: str) -> None:
    body = '{"query": "query($n: Int!) { __typename }", "variables": {"n": ' + sign + "9" * digits + "}}"
    _assert_typed_refusal(_post(api[0], body.encode()))


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("name", [None, "Watch"])
def test_a_subscription_over_http_is_refused(api: tuple[str, Path], method: str, name: str | None) -> None:
    query = (
        SUBSCRIPTION if name is None else f"subscription {name} {SUBSCRIPTION.removeprefix('subscription')}"
    )
    params: dict[str, Any] = {"query": query, **({"operationName": name} if name else {})}
    if method == "GET":
        response = httpx.get(f"{api[0]}/graphql", params=params, timeout=30)
    else:
        response = _post(api[0], json.dumps(params).encode())
    _assert_typed_refusal(response)
    assert "WebSocket" in response.json()["errors"][0]["message"]


CONTENT_TYPES = [
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/graphql",
    "application/xml",
    "image/png",
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_bodies_that_are_not_json_are_refused_as_unsupported(
    api: tuple[str, Path], content_type: str | None
) -> None:
    response = _post(api[0], json.dumps({"query": QUERY}).encode(), content_type)
    _assert_typed_refusal(response)
    assert response.status_code == 415


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_methods_are_refused(api: tuple[str, Path], method: str) -> None:
    response = httpx.request(method, f"{api[0]}/graphql", json={"query": QUERY}, timeout=30)
    _assert_typed_refusal(response)


def test_the_well_formed_twin_of_each_request_is_answered(api: tuple[str, Path]) -> None:
    answered = _post(api[0], json.dumps({"query": QUERY, "variables": {}, "operationName": None}).encode())
    assert answered.status_code == 200 and answered.json() == {"data": {"__typename": "Query"}}
    named = _post(
        api[0], json.dumps({"query": "query Known { __typename }", "operationName": "Known"}).encode()
    )
    assert named.json() == {"data": {"__typename": "Query"}}


# ---- WebSocket -------------------------------------------------------------------------------


@contextlib.contextmanager
def _socket(base: str, *, init: bool = True) -> Iterator[ClientConnection]:
    with connect(base.replace("http", "ws", 1) + "/graphql", subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        if init:
            ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": f"Bearer {token('ws-fuzz')}"}}
                )
            )
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        yield ws


def _close_code(ws: ClientConnection) -> int | None:
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        while True:
            ws.recv(timeout=10)
    return ws.close_code


malformed_messages = st.one_of(
    not_objects.map(json.dumps),
    st.dictionaries(st.sampled_from(["id", "payload"]), json_values).map(json.dumps),  # no type
    st.builds(lambda t: json.dumps({"type": t}), not_strings),  # a type that is no string
    st.builds(
        lambda t: json.dumps({"type": t, "id": "1"}),
        st.text(max_size=20).filter(
            lambda t: t not in ("connection_init", "ping", "pong", "subscribe", "complete")
        ),
    ),
    st.builds(lambda i: json.dumps({"type": "subscribe", "id": i, "payload": {"query": QUERY}}), not_strings),
    st.builds(lambda p: json.dumps({"type": "subscribe", "id": "1", "payload": p}), not_objects),
    st.builds(lambda q: json.dumps({"type": "subscribe", "id": "1", "payload": {"query": q}}), not_strings),
    st.builds(
        lambda v: json.dumps({"type": "subscribe", "id": "1", "payload": {"query": QUERY, "variables": v}}),
        not_objects.filter(lambda v: v is not None),
    ),
    st.builds(lambda i: json.dumps({"type": "complete", "id": i}), not_strings),
    st.builds(
        lambda p: json.dumps({"type": "ping", "payload": p}), not_objects.filter(lambda v: v is not None)
    ),
    st.sampled_from(
        ["{", "nope", '{"type": "subscribe"', "[" * 10_000 + "]" * 10_000, '{"n": ' + "9" * 5000 + "}"]
    ),
)


@EXAMPLES
@given(message=malformed_messages)
def test_malformed_messages_close_the_socket_with_4400(api: tuple[str, Path], message: str) -> None:
    with _socket(api[0]) as ws:
        ws.send(message)
        assert _close_code(ws) == 4400, message[:200]


@pytest.mark.parametrize("message", [b"\x00\x01", b'{"type": "ping"}'])
def test_binary_frames_close_the_socket_with_4400(api: tuple[str, Path], message: bytes) -> None:
    with _socket(api[0]) as ws:
        ws.send(message)
        assert _close_code(ws) == 4400


@EXAMPLES
@given(payload=not_objects.filter(lambda v: v is not None))
def test_a_connection_init_payload_that_is_no_object_closes_with_4400(
    api: tuple[str, Path], payload: object
) -> None:
    with _socket(api[0], init=False) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert _close_code(ws) == 4400


def test_a_well_formed_socket_still_works_after_the_abuse(api: tuple[str, Path]) -> None:
    with _socket(api[0]) as ws:
        ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": {"query": QUERY}}))
        assert json.loads(ws.recv(timeout=10)) == {
            "id": "1",
            "type": "next",
            "payload": {"data": {"__typename": "Query"}},
        }
