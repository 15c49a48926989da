"""The `hello` example algorithm, run by `nexusd dev` as a pod's container process.

It follows the upstream algorithm contract (contract §10.2), with only the standard library so
it runs in any container image that has Python:
- `--sas-uri=<payload URL>` and `--request-id=<id>` on the command line;
- `NEXUS__ALGORITHM_NAME`, `NEXUS__CLIENT__RECEIVER` (receiver base URL) and
  `NEXUS__RESULT_UPLOAD_URL` (nexusd's signed PUT URL for the result) in the environment.

It greets `name` from the payload. `{"fail": "report"}` makes it report an error cause instead
(ends FAILED); `{"fail": "crash"}` makes it exit 1 without reporting (the Job fails).
`{"sleep": seconds}` makes it take its time.

A run can end before its pod does (cancelled, or a pod re-created after a crash for a run that
was already reported): nexusd then answers the upload and the report with 409, and hello exits
0 without changing anything, as the SDK does (its receiver client swallows errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def _request(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


class RunEnded(Exception):
    """nexusd answered 409: the run has ended already; its outcome stays as it was."""


def _unless_ended(method: str, url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    try:
        return _request(method, url, body)
    except urllib.error.HTTPError as exc:
        if exc.code == 409:
            raise RunEnded(exc.read().decode("utf-8", "replace")) from None
        raise


def report(receiver: str, algorithm: str, request_id: str, document: dict[str, str]) -> None:
    url = f"{receiver.rstrip('/')}/algorithm/v1/complete/{algorithm}/requests/{request_id}"
    _unless_ended("POST", url, json.dumps(document).encode())


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except RunEnded as exc:
        print(f"hello: nothing to do, {exc}", file=sys.stderr)
        return 0


def run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="hello")
    parser.add_argument("--sas-uri", required=True)
    parser.add_argument("--request-id", required=True)
    args = parser.parse_args(argv)
    algorithm = os.environ["NEXUS__ALGORITHM_NAME"]
    receiver = os.environ["NEXUS__CLIENT__RECEIVER"]
    _, _, body = _request("GET", args.sas_uri)
    payload: dict[str, Any] = json.loads(body)
    time.sleep(float(payload.get("sleep", 0)))
    if payload.get("fail") == "crash":
        print("hello: crashing as asked", file=sys.stderr)
        return 1
    if payload.get("fail") == "report":
        report(
            receiver,
            algorithm,
            args.request_id,
            {
                "resultUri": "",
                "errorCause": "<class 'ValueError'>: failing as asked)",
                "errorDetails": "the payload asked hello to fail",
            },
        )
        return 0
    result = {"greeting": f"Hello, {payload.get('name', 'world')}!", "requestId": args.request_id}
    _, headers, _ = _unless_ended(
        "PUT", os.environ["NEXUS__RESULT_UPLOAD_URL"], json.dumps(result).encode()
    )
    location = headers.get("Location", "")
    report(
        receiver,
        algorithm,
        args.request_id,
        {"resultUri": location, "errorCause": "", "errorDetails": ""},
    )
    print(f"hello: reported result for {args.request_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
