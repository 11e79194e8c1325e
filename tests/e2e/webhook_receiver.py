"""A webhook receiver for the tests, run as its own process (so that it can be killed mid-run).

`python -m tests.e2e.webhook_receiver PORT LOG` appends one JSON line per request to LOG (path,
the three Standard Webhooks headers, the body, the status it answers) before answering:
- /ok: 200;
- /fail: 500 to its first FAILURES requests (per process), then 200;
- /slow: takes SLOW_SECONDS over its first request (per process), then answers at once;
- /redirect: 302 to /redirect-target (which answers 200 and must never be reached);
- any other path: 200.
The test verifies the signatures from the log; the receiver keeps no secret.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import uvicorn

FAILURES = 2
SLOW_SECONDS = 4.0
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "host", "content-type")


def _append(log_path: str, line: dict[str, Any]) -> None:
    # Written before the answer: a receiver killed after this line has it, and gets a retry.
    with open(log_path, "a") as log:
        log.write(json.dumps(line) + "\n")


def make_app(log_path: str) -> Any:
    seen: Counter[str] = Counter()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender gave up before its body arrived (its attempt timed out)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen[path] += 1
        status, extra = 200, []
        if path == "/fail" and seen[path] <= FAILURES:
            status = 500
        elif path == "/redirect":
            status, extra = 302, [(b"location", b"/redirect-target")]
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.decode() in HEADERS}
        line = {
            "path": path,
            "headers": headers,
            "body": body.decode(),
            "status": status,
            "n": seen[path],
            "received_at": time.time(),
        }
        _append(log_path, line)
        if path == "/slow" and seen[path] == 1:
            await asyncio.sleep(SLOW_SECONDS)
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


if __name__ == "__main__":
    port, log_path = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(make_app(log_path), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
