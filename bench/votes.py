"""Vote round trips against the real app: latency (p50, p95), votes per second, none lost.

    python bench/votes.py [--clients 50] [--votes 20] [--rates 200,50]

Starts `python app.py` in its own process on a fresh data folder (the tutorial's pairs as the
pool), as voters meet it: an owner password is set, so no client is the owner, and every vote
goes through the voter path (signed voter ids checked, rate limits counted; the limits are
raised out of reach, so they cost their bookkeeping and refuse nothing). Then it drives the
vote endpoint over HTTP with the browser's queue protocol:

1. closed loop: every client votes again as soon as its last vote is acknowledged, which
   measures the most votes per second the app sustains;
2. open loop: the clients together offer each of `--rates` votes per second, which measures
   the latency a voter sees at that load (200/s: past capacity; 50/s: a large class).

Afterwards every acknowledged vote is looked up in the database: lost or doubled votes are
counted, not assumed. The baseline is the same app measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from app_process import start_app, stop_app  # beside this script
from pipeline.votes import VoteStore

# Nobody is the owner (a password is set), and the limits are counted but out of reach.
VOTER_PATH = {
    "TITLE_DPO_OWNER_PASSWORD": uuid.uuid4().hex,
    "TITLE_DPO_VOTES_PER_MINUTE": "1000000",
    "TITLE_DPO_ADDRESS_VOTES_PER_MINUTE": "1000000",
    "TITLE_DPO_NEW_VOTERS_PER_HOUR": "1000000",
}
# Positions in the vote event's outputs: idea, left, right, pair id, progress, ...
PAIR_ID_OUTPUT, PROGRESS_OUTPUT = 3, 4


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


class BrowserProtocol:
    """Events sent the way the browser sends them: one POST to run/predict for unqueued events
    (voting), else POST queue/join and read the SSE stream queue/data for that session until
    the event completes. asyncio keeps the client's own
    cost small, so the figures are the app's, not gradio_client's threads' (which cost about
    90 ms of CPU a call here and would saturate these 2 cores first)."""

    def __init__(self, url: str, http) -> None:
        import httpx

        self.url, self.http = url, http
        config = httpx.get(url + "config").json()
        self.events = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}

    async def call(self, session: str, api_name: str, *values):
        event = self.events[api_name]
        data = list(values) + [None] * (len(event["inputs"]) - len(values))  # state: server-side
        body = {"data": data, "fn_index": event["id"], "session_hash": session,
                "event_data": None, "trigger_id": None}  # fmt: skip
        if event["queue"] is False:  # the browser POSTs unqueued events in one request
            response = await self.http.post(f"{self.url}gradio_api/run/predict", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"{api_name} failed: {response.text}")
            return response.json()["data"]
        joined = await self.http.post(self.url + "gradio_api/queue/join", json=body)
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        stream = f"{self.url}gradio_api/queue/data?session_hash={session}"
        async with self.http.stream("GET", stream) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") == event_id and message["msg"] == "process_completed":
                    if not message.get("success"):
                        raise RuntimeError(f"{api_name} failed: {message}")
                    return message["output"]["data"]
        raise RuntimeError(f"{api_name}: stream ended without a result")


def run_voters(url: str, clients: int, votes: int, interval: float | None):
    """Each client opens the page (all at once), then votes `votes` times; returns (vote
    latencies in s, acknowledged, seconds voting, page-open latencies in s)."""
    return asyncio.run(_run_voters(url, clients, votes, interval))


async def _run_voters(url, clients, votes, interval):
    import httpx

    latencies: list[float] = []
    acknowledged: list[tuple[str, int]] = []
    # Idle connections are dropped here before uvicorn's 5 s keep-alive closes them there: a
    # request sent on a connection the server is closing at that moment fails (ReadError).
    limits = httpx.Limits(max_connections=4 * clients, max_keepalive_connections=4 * clients,
                          keepalive_expiry=2.0)  # fmt: skip
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        app = BrowserProtocol(url, http)
        sessions = [uuid.uuid4().hex for _ in range(clients)]
        opens: list[float] = []

        async def open_page(session: str):
            started = time.perf_counter()
            first = await app.call(session, "start", None)
            opens.append(time.perf_counter() - started)
            return first

        firsts = await asyncio.gather(*(open_page(s) for s in sessions))
        tokens = [first[0] for first in firsts]  # the signed voter id each browser keeps

        async def voter(index: int) -> None:
            pair_id = firsts[index][PAIR_ID_OUTPUT + 1]  # start also returns the voter id
            next_at = time.perf_counter() + (index / clients) * (interval or 0)
            for _ in range(votes):
                if interval:
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                    next_at += interval
                started = time.perf_counter()
                out = await app.call(sessions[index], "vote_left", tokens[index], pair_id)
                latencies.append(time.perf_counter() - started)
                if not str(out[PROGRESS_OUTPUT]).startswith("Vote saved"):
                    raise RuntimeError(f"vote not acknowledged: {out[PROGRESS_OUTPUT]}")
                acknowledged.append((tokens[index].split(".")[0], pair_id))
                pair_id = out[PAIR_ID_OUTPUT]

        started = time.perf_counter()
        await asyncio.gather(*(voter(i) for i in range(clients)))
        return latencies, acknowledged, time.perf_counter() - started, opens


def report(label: str, latencies: list[float], seconds: float) -> float:
    rate = len(latencies) / seconds
    print(
        f"{label}: {len(latencies)} votes in {seconds:.1f} s = {rate:.0f} votes/s; "
        f"latency p50 {1000 * percentile(latencies, 50):.0f} ms, "
        f"p95 {1000 * percentile(latencies, 95):.0f} ms"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--votes", type=int, default=20, help="votes per client per phase")
    parser.add_argument("--rates", default="200,50", help="offered votes/s of each open-loop phase")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        process, url = start_app(
            "--model", "smollm2-offline", "--data", str(data), log_path=Path(tmp) / "app.log",
            env=VOTER_PATH,
        )  # fmt: skip
        try:
            print(f"app: {url}; {args.clients} clients x {args.votes} votes per phase")
            lat, acked_closed, secs, opens = run_voters(url, args.clients, args.votes, None)
            print(
                f"{args.clients} voters opening the page at once: first pair after p50 "
                f"{1000 * percentile(opens, 50):.0f} ms, p95 {1000 * percentile(opens, 95):.0f} ms"
            )
            closed_rate = report("closed loop (as fast as acknowledged)", lat, secs)
            acked_open, achieved = [], {}
            for rate in rates:
                lat, acked, secs, _ = run_voters(url, args.clients, args.votes, args.clients / rate)
                achieved[rate] = report(f"open loop (offered {rate:.0f} votes/s)", lat, secs)
                acked_open += acked
        except Exception:
            tail = (Path(tmp) / "app.log").read_text().splitlines()[-40:]
            print("the app's log, last lines:", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            stop_app(process)
        stored = {(v.voter, v.pair_id) for v in VoteStore.open_existing(data).votes()}
        acked = set(acked_closed) | set(acked_open)
        total_acked = len(acked_closed) + len(acked_open)
        print(
            f"acknowledged {total_acked}, stored {len(stored)}, "
            f"lost {len(acked - stored)}, doubled {total_acked - len(acked)}"
        )
        for rate, got in achieved.items():
            print(
                f"headroom at {rate:.0f} votes/s: closed-loop capacity / offered rate = "
                f"{closed_rate / rate:.2f}x (achieved {got:.0f} of {rate:.0f} offered)"
            )


if __name__ == "__main__":
    main()
