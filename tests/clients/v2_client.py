#!/usr/bin/env python3
"""End-to-end check with the real InfluxDB 2.x Python client (`influxdb-client` on PyPI).

Goal: the v2 client writes unchanged to `/api/v2/write`: gzip request bodies,
the batching writer (several requests, the last one sent by its flush
interval or at close), and a synchronous write with `precision=s`; every point is stored.

Method: write BATCH_POINTS points through a gzip batching writer (batch size
500: requests of 500, 500 and 200 lines) and one point synchronously with
second precision; any error callback fails the run. The client's own query
API speaks Flux, which the server does not; so read back with InfluxQL over
plain `/query` (urllib) and compare counts, sums, first and last points
exactly. Exit status 0 and a last line `v2_client: OK <n> points` on
success; otherwise exit status 1 and the reason on stderr.

Usage: v2_client.py --url http://127.0.0.1:8086 [--bucket e2e_v2]
"""

import argparse
import json
import sys
import urllib.parse
import urllib.request

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteOptions

MEASUREMENT = "v2_points"
BATCH_POINTS = 1200
# 2026-01-01T00:00:00Z in nanoseconds
T0_NS = 1767225600 * 1_000_000_000


def fail(message):
    print(f"v2_client: FAIL {message}", file=sys.stderr)
    sys.exit(1)


def query(url, db, q):
    params = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ns"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=30) as response:
        body = response.read()
    document = json.loads(body)
    result = document["results"][0]
    if "error" in result:
        fail(f"query {q!r}: {result['error']}")
    return result.get("series", [])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--bucket", default="e2e_v2")
    args = parser.parse_args()
    url = args.url.rstrip("/")

    errors = []
    batches = []

    def on_success(conf, data):
        batches.append(len(data.splitlines()) if isinstance(data, (bytes, str)) else 1)

    def on_error(conf, data, exception):
        errors.append(f"batch {conf}: {exception}")

    def on_retry(conf, data, exception):
        errors.append(f"retry of batch {conf}: {exception}")

    with InfluxDBClient(url=url, token="e2e-token", org="e2e-org", enable_gzip=True, timeout=30_000) as client:
        options = WriteOptions(batch_size=500, flush_interval=1_000, max_retries=0)
        with client.write_api(
            write_options=options,
            success_callback=on_success,
            error_callback=on_error,
            retry_callback=on_retry,
        ) as writer:
            for i in range(BATCH_POINTS):
                point = (
                    Point(MEASUREMENT)
                    .tag("shard", f"s{i % 4}")
                    .field("n", i)
                    .field("v", i * 0.5)
                    .field("note", f"p{i}")
                    .time(T0_NS + i * 1_000_000_000, WritePrecision.NS)
                )
                writer.write(bucket=args.bucket, record=point)
        # Leaving the block closed the writer: every batch was flushed.
        if errors:
            fail("; ".join(errors))
        if sum(batches) != BATCH_POINTS:
            fail(f"batches acknowledged cover {sum(batches)} lines, wrote {BATCH_POINTS}: {batches}")

        sync = client.write_api(write_options=SYNCHRONOUS)
        sync.write(
            bucket=args.bucket,
            record=f"{MEASUREMENT},shard=sync n=-1i,v=0.25,note=\"sync\" {T0_NS // 1_000_000_000 + 7200}",
            write_precision=WritePrecision.S,
        )

    series = query(url, args.bucket, f'SELECT count("n"), sum("n"), sum("v") FROM "{MEASUREMENT}" WHERE "shard" =~ /^s[0-9]$/')
    want = [0, BATCH_POINTS, BATCH_POINTS * (BATCH_POINTS - 1) // 2, BATCH_POINTS * (BATCH_POINTS - 1) / 4]
    have = series[0]["values"][0] if series else None
    if have != want:
        fail(f"count/sum: want {want}, got {have}")

    series = query(url, args.bucket, f'SELECT "n", "note", "v" FROM "{MEASUREMENT}" WHERE "shard" = \'s3\' ORDER BY time DESC LIMIT 1')
    last = BATCH_POINTS - 1
    want = [[T0_NS + last * 1_000_000_000, last, f"p{last}", last * 0.5]]
    have = series[0]["values"] if series else None
    if have != want:
        fail(f"last point of shard s3: want {want}, got {have}")

    series = query(url, args.bucket, f'SELECT "n", "note", "v" FROM "{MEASUREMENT}" WHERE "shard" = \'sync\'')
    want = [[T0_NS + 7200 * 1_000_000_000, -1, "sync", 0.25]]
    have = series[0]["values"] if series else None
    if have != want:
        fail(f"synchronous point with precision=s: want {want}, got {have}")

    print(f"v2_client: OK {BATCH_POINTS + 1} points in {len(batches)} batches + 1 synchronous write")


if __name__ == "__main__":
    main()
