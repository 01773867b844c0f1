#!/usr/bin/env python3
"""End-to-end check with the real InfluxDB 1.x Python client (`influxdb` on PyPI).

Goal: the v1 client works unchanged against the server: `create_database`,
`write_points` with `time_precision='s'`, a user and password, and
`batch_size` (several requests), then `query` returns exactly the written
points.

Method: write POINTS (fixed times, every field type, a tag value needing an
escape), read them back with `query(..., epoch='s')` and with the default
RFC3339 time format, compare field by field. Exit status 0 and a last line
`v1_client: OK <n> points` on success; otherwise exit status 1 and the
reason on stderr. Run by tests/clients_e2e.rs; also runs against a real
InfluxDB 1.6.7 (auth off: the credentials are sent but not checked).

Usage: v1_client.py --host 127.0.0.1 --port 8086 [--db e2e_v1] [--accept-json]
"""

import argparse
import sys

from influxdb import InfluxDBClient

MEASUREMENT = "v1_points"
# 2026-01-01T00:00:00Z
T0 = 1767225600


def points():
    out = []
    for i in range(7):
        out.append(
            {
                "measurement": MEASUREMENT,
                "tags": {"host": ["a", "b", "web 1"][i % 3]},
                "time": T0 + i * 60,
                "fields": {
                    "value": 0.5 + i * 1.25,
                    "count": i * 1000,
                    "label": f"point {i}",
                    "ok": i % 2 == 0,
                },
            }
        )
    # An integer beyond 2^53: must come back exact.
    out.append(
        {
            "measurement": MEASUREMENT,
            "tags": {"host": "big"},
            "time": T0 + 3600,
            "fields": {"value": -1.0, "count": 9007199254740993, "label": "big", "ok": True},
        }
    )
    return out


def same_value(want, have):
    """Equal value and kind. A float may come back as a Python int: JSON has
    one number type and InfluxDB writes 2.0 as `2`."""
    if isinstance(want, bool) or isinstance(have, bool):
        return type(want) is type(have) and want == have
    if isinstance(want, float):
        return isinstance(have, (int, float)) and float(have) == want
    return type(want) is type(have) and want == have


def fail(message):
    print(f"v1_client: FAIL {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", default="e2e_v1")
    parser.add_argument(
        "--accept-json",
        action="store_true",
        help="ask for JSON instead of msgpack (InfluxDB 1.6.7 answers msgpack by default; ringest JSON)",
    )
    args = parser.parse_args()
    headers = {"Accept": "application/json"} if args.accept_json else None

    client = InfluxDBClient(
        host=args.host,
        port=args.port,
        username="e2e-user",
        password="e2e-password",
        database=args.db,
        timeout=30,
        headers=headers,
    )
    client.create_database(args.db)
    databases = [d["name"] for d in client.get_list_database()]
    if args.db not in databases:
        fail(f"create_database: {args.db!r} not in SHOW DATABASES {databases}")

    written = points()
    if not client.write_points(written, time_precision="s", batch_size=3):
        fail("write_points returned False")

    # Read back with epoch seconds.
    result = client.query(f'SELECT * FROM "{MEASUREMENT}" GROUP BY "host"', epoch="s")
    got = {}
    for (_, tags), rows in result.items():
        for row in rows:
            got[(tags["host"], row["time"])] = row
    if len(got) != len(written):
        fail(f"query returned {len(got)} points, wrote {len(written)}: {result.raw}")
    for p in written:
        key = (p["tags"]["host"], p["time"])
        row = got.get(key)
        if row is None:
            fail(f"point {key} missing from {sorted(got)}")
        for name, want in p["fields"].items():
            have = row.get(name)
            if not same_value(want, have):
                fail(f"point {key} field {name}: wrote {want!r}, read {have!r}")

    # The default time format: RFC3339 strings.
    result = client.query(f'SELECT "count" FROM "{MEASUREMENT}" WHERE "host" = \'big\'')
    rows = list(result.get_points())
    want = [{"time": "2026-01-01T01:00:00Z", "count": 9007199254740993}]
    if rows != want:
        fail(f"RFC3339 read back: want {want}, got {rows}")

    print(f"v1_client: OK {len(written)} points")


if __name__ == "__main__":
    main()
