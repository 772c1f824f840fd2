#!/usr/bin/env python3
"""A Python client of Herald's HTTP API: publish with retries, follow a channel with resume.

Standard library only (Python 3.8+), so it runs wherever Python does:

    python3 herald.py publish http://127.0.0.1:7070/v1/channels/orders order-1 '{"status": "paid"}'
    python3 herald.py follow http://127.0.0.1:7070/v1/channels/orders [--key K] [--after CURSOR] [--count N]

`follow` prints one CloudEvent per line (JSON). As a module:

    for event in follow(url):
        if event["type"] == GAP_TYPE: ...  # a hole Herald could not fill: say so, reload, ...
        else: handle(event["data"])

It reconnects after any break with the last event's cursor (Last-Event-ID), so every message
arrives once, in order.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

GAP_TYPE = "dev.herald.gap"


class HeraldError(Exception):
    """An error answer: RFC 9457 problem details (type, title, status, detail)."""

    def __init__(self, status, problem):
        self.status, self.problem = status, problem
        super().__init__("herald: %d %s: %s" % (status, problem.get("title", ""), problem.get("detail", "")))

    @property
    def retryable(self):
        return self.status == 429 or self.status >= 500


def _error(e):
    try:
        problem = json.loads(e.read() or b"{}")
    except ValueError:
        problem = {}
    if e.headers.get("Retry-After", "").isdigit():
        problem.setdefault("retryAfter", int(e.headers["Retry-After"]))
    return HeraldError(e.code, problem)


def _pause(attempt, last):
    if isinstance(last, HeraldError) and last.problem.get("retryAfter"):
        return last.problem["retryAfter"]
    return min(0.1 * 2 ** attempt, 5.0)


def publish(channel_url, key, data, event_type=None, idempotency_key=None, attempts=5, timeout=10):
    """Publishes data (sent as JSON) under key and returns the answer ({"id", "shard", "eventId"}).

    No answer, 429 and 5xx are retried with one Idempotency-Key, so the message is stored once.
    """
    headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key or str(uuid.uuid4())}
    if event_type:
        headers["Ce-Type"] = event_type
    url = channel_url + "/messages?" + urllib.parse.urlencode({"key": key})
    body = json.dumps(data).encode()
    last = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(_pause(attempt, last))
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            last = _error(e)
            if not last.retryable:
                raise last
        except OSError as e:  # no answer: the same key makes the retry safe
            last = e
    raise last


def follow(channel_url, key=None, after=None, idle_timeout=60):
    """Yields every event of the channel (or of one key) from now on, or after cursor `after`.

    Gap events (type GAP_TYPE) are yielded too. Answers that cannot get better (400, 401, 403,
    404, 421) raise HeraldError; anything else reconnects from the last cursor.
    """
    cursor = after or ""
    attempt = 0
    last = None
    while True:
        if attempt:
            time.sleep(_pause(attempt, last))
        query = "?" + urllib.parse.urlencode({"key": key}) if key else ""
        headers = {"Accept": "text/event-stream"}
        if cursor:
            headers["Last-Event-ID"] = cursor
        request = urllib.request.Request(channel_url + "/events" + query, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=idle_timeout) as stream:
                kind, data = "", ""
                for raw in stream:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].lstrip(" ")
                    elif line == "":
                        if kind in ("message", "gap"):
                            event = json.loads(data)
                            cursor = event["heraldcursor"]
                            attempt = 0
                            yield event
                        kind, data = "", ""
            last = None  # the server ended the stream: reconnect
        except urllib.error.HTTPError as e:
            last = _error(e)
            if not last.retryable:
                raise last
        except OSError as e:  # the connection broke (or was idle longer than idle_timeout)
            last = e
        attempt += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="publish one JSON message")
    p.add_argument("channel_url")
    p.add_argument("key")
    p.add_argument("data", help="JSON")
    f = sub.add_parser("follow", help="print the channel's events, one JSON per line")
    f.add_argument("channel_url")
    f.add_argument("--key")
    f.add_argument("--after", help="resume after this cursor")
    f.add_argument("--count", type=int, help="stop after this many messages")
    args = parser.parse_args()
    try:
        if args.command == "publish":
            print(json.dumps(publish(args.channel_url, args.key, json.loads(args.data))))
            return 0
        messages = 0
        for event in follow(args.channel_url, key=args.key, after=args.after):
            print(json.dumps(event), flush=True)
            if event["type"] != GAP_TYPE:
                messages += 1
                if args.count and messages >= args.count:
                    return 0
    except HeraldError as e:
        print(e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
