"""`python -m tests.perf.http_probe URL WINDOW`: GET URL/healthz back to back (20 ms apart)
for WINDOW seconds, and URL/readyz once a second until it answers 200; prints one JSON line.

A process of its own, so the latencies it sees are the server's: a probe in the benchmark's
process would share its event loop (and the GIL) with the embedded cluster it runs.
"""

from __future__ import annotations

import json
import sys

import httpx
import trio


async def probe(url: str, window: float) -> dict[str, object]:
    latencies: list[float] = []
    serving_after = ready_after = None
    started = trio.current_time()
    next_ready_check = started
    async with httpx.AsyncClient(timeout=30) as http:
        with trio.move_on_after(window):
            while True:
                began = trio.current_time()
                try:
                    response = await http.get(f"{url}/healthz")
                except httpx.TransportError:
                    await trio.sleep(0.05)
                    continue
                if response.status_code != 200:
                    raise SystemExit(f"/healthz answered {response.status_code}")
                if serving_after is None:
                    serving_after = trio.current_time() - started
                else:
                    latencies.append(trio.current_time() - began)
                if ready_after is None and trio.current_time() >= next_ready_check:
                    next_ready_check += 1
                    if (await http.get(f"{url}/readyz")).status_code == 200:
                        ready_after = trio.current_time() - started
                await trio.sleep(0.02)
    return {"latencies": latencies, "serving_after": serving_after, "ready_after": ready_after}


if __name__ == "__main__":
    print(json.dumps(trio.run(probe, sys.argv[1], float(sys.argv[2]))))
