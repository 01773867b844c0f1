#!/usr/bin/env python3
"""Writes the checked-in seed corpora, tests/fuzz/corpus/<target>/.

    python3 tests/fuzz/make_seeds.py [path/to/ringest]

Sources: requests shaped like the curl probes of
/work/shared/reference/influxdb-observations (when present) and the
golden InfluxQL cases (tests/fixtures/influxql/golden.json); WAL segments
and a persisted catalog (`parquet/_catalog.json`) made by the real server
(the release binary, default target/release/ringest), which this script
starts on a free port twice per data directory, writes to, and stops with
SIGTERM. Each seed carries the option bytes its target reads first (see
the target's module doc). Deterministic except for the server's seeds
(timestamps are "now": the default retention refuses old points).
"""

import gzip
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
OBSERVATIONS = "/work/shared/reference/influxdb-observations"
GOLDEN = os.path.join(ROOT, "tests", "fixtures", "influxql", "golden.json")
DATA_LP = os.path.join(ROOT, "tests", "fixtures", "influxql", "data.lp")


def put(target, name, data):
    directory = os.path.join(OUT, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def observed_bodies():
    """The --data-binary arguments of the recorded curl probes."""
    bodies = []
    if not os.path.isdir(OBSERVATIONS):
        return bodies
    for name in sorted(os.listdir(OBSERVATIONS)):
        if not name.startswith("v1_") or "readback" in name:
            continue
        with open(os.path.join(OBSERVATIONS, name), encoding="utf-8", errors="replace") as f:
            for line in f:
                m = re.search(r"--data-binary (.*)$", line.rstrip("\n"))
                if m and not m.group(1).startswith("@"):
                    bodies.append(m.group(1).encode())
    return bodies


def golden_lines(n):
    with open(DATA_LP, "rb") as f:
        return b"".join(f.readlines()[:n])


# ---------------------------------------------------------------- HTTP

def request(method, target, headers=(), body=b"", version=b"HTTP/1.1"):
    head = method + b" " + target + b" " + version + b"\r\n"
    head += b"Host: 127.0.0.1:8086\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n"
    for h in headers:
        head += h + b"\r\n"
    return head + b"\r\n" + body


def chunked(body, pieces=3, extension=b"", trailer=b""):
    out = b""
    step = max(1, len(body) // pieces)
    for i in range(0, len(body), step):
        part = body[i:i + step]
        out += b"%x" % len(part) + extension + b"\r\n" + part + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


def http_seeds():
    lp = golden_lines(3)
    form = b"application/x-www-form-urlencoded"
    lp_gzip = gzip.compress(lp, mtime=0)
    query_form = b"db=golden&q=SHOW+MEASUREMENTS%3B+SHOW+DATABASES"
    seeds = {
        "ping": request(b"GET", b"/ping"),
        "head-ping-http10": request(b"HEAD", b"/ping", version=b"HTTP/1.0"),
        "write-content-length": request(
            b"POST", b"/write?db=mydb&precision=ns",
            [b"Content-Length: %d" % len(lp), b"Content-Type: " + form], lp),
        "write-chunked": request(
            b"POST", b"/write?db=mydb", [b"Transfer-Encoding: chunked"], chunked(lp)),
        "write-chunked-ext-trailer": request(
            b"POST", b"/write?db=mydb", [b"Transfer-Encoding: chunked"],
            chunked(lp, 2, b";name=value", b"X-Checksum: abc\r\n")),
        "write-gzip": request(
            b"POST", b"/write?db=mydb",
            [b"Content-Encoding: gzip", b"Content-Length: %d" % len(lp_gzip)], lp_gzip),
        "write-expect-continue": request(
            b"POST", b"/write?db=mydb&rp=autogen&u=admin&p=secret",
            [b"Expect: 100-continue", b"Content-Length: %d" % len(lp)], lp),
        "write-v2-token": request(
            b"POST", b"/api/v2/write?org=o&bucket=mydb&precision=s",
            [b"Authorization: Token abc123", b"Content-Length: 12"], b"m,t=a f=1 1\n"),
        "query-get": request(
            b"GET", b"/query?db=golden&epoch=ms&q=SELECT%20mean(%22usage_idle%22)%20FROM%20cpu%20GROUP%20BY%20time(1m)"),
        "query-post-form": request(
            b"POST", b"/query?chunked=true&chunk_size=2",
            [b"Content-Type: " + form, b"Authorization: Basic YWRtaW46c2VjcmV0",
             b"Content-Length: %d" % len(query_form)],
            query_form),
        "keep-alive-http10": request(
            b"POST", b"/write?db=mydb", [b"Connection: keep-alive", b"Content-Length: 8"],
            b"m f=1i\n\n", version=b"HTTP/1.0"),
        "absolute-form": request(b"GET", b"http://127.0.0.1:8086/ping?verbose=true"),
        "options-star": request(b"OPTIONS", b"*"),
        "pipelined": request(b"GET", b"/ping") + request(
            b"POST", b"/write?db=mydb", [b"Content-Length: 6", b"Connection: close"], b"m f=1\n"),
    }
    for name, data in seeds.items():
        put("http_head", name, data)

    # http_body: [limits, split seed] + chunked bytes. 0x3f: the server's
    # kind of limits (4096 body, 4096 line, 16384 trailer); 0x15: small.
    bodies = {
        "simple": b"5\r\nhello\r\n0\r\n\r\n",
        "three-chunks": chunked(lp),
        "extension-bws": b"5 \t;a=b;c=\"d\"\r\nhello\r\n0;last\r\n\r\n",
        "trailers": b"3\r\nabc\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
        "upper-hex-leading-zeros": b"000A\r\n0123456789\r\n00\r\n\r\n",
        "pipelined-rest": b"1\r\nx\r\n0\r\n\r\nGET /ping HTTP/1.1\r\n\r\n",
        "lf-only": b"5\nhello\n0\n\n",
        "overflow": b"fffffffffffffffff\r\n",
    }
    for name, data in bodies.items():
        put("http_body", name, b"\x3f\x07" + data)
        put("http_body", name + "-small-limits", b"\x15\x2a" + data)


# ---------------------------------------------------------- line protocol

def line_protocol_seeds():
    for i, body in enumerate(observed_bodies()):
        put("line_protocol", "observed-%02d" % i, b"\x00" + body)
    put("line_protocol", "golden-ns", b"\x00" + golden_lines(12))
    put("line_protocol", "golden-s-small-limits", b"\x83" + golden_lines(4))
    cases = [
        b"m,a=1,a=2 f=1", b"m,time=1 f=1", b"m time=1", b"m f=1,f=2i", b"m f=1e400",
        b"m f=1 9223372036854775807", b"m f=1,", b"m f=1, 5", b"m f=1,,g=2", b"m ,f=1",
        b"m,b=1,a=2 f=1,f=2",
        b"# comment\n\nm\\ x,t\\,k=v\\=1 s=\"q\\\"\\\\\",u=18446744073709551615u,b=tRUE,i=-9i 1\n",
    ]
    for i, case in enumerate(cases):
        put("line_protocol", "difference-%02d" % i, b"\x00" + case)


# -------------------------------------------------------------------- gzip

def gzip_seeds():
    text = golden_lines(20)
    limit_64k, limit_4k = 4, 3
    put("gzip", "member", bytes([limit_64k, 0]) + gzip.compress(text, mtime=0))
    put("gzip", "two-members", bytes([limit_64k, 0])
        + gzip.compress(text[:500], mtime=0) + gzip.compress(text[500:], mtime=0))
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="data.lp", mode="wb", fileobj=buffer, mtime=0) as f:
        f.write(text[:300])
    put("gzip", "fname-header", bytes([limit_64k, 0]) + buffer.getvalue())
    put("gzip", "over-limit", bytes([limit_4k, 0]) + gzip.compress(b"\0" * 20000, mtime=0))
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    put("gzip", "raw-deflate-no-header", bytes([limit_64k, 0]) + raw.compress(text) + raw.flush())
    put("gzip", "round-trip", bytes([limit_64k, 13]) + text[:400] + b"\xff" + text[400:600])
    put("gzip", "round-trip-small-limit", bytes([2, 1]) + text[:200])


# ---------------------------------------------------------------- InfluxQL

def influxql_seeds():
    epochs = {None: 0, "ns": 1, "n": 1, "u": 2, "us": 2, "ms": 3, "s": 4, "m": 5, "h": 6}
    with open(GOLDEN, encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    for case in cases:
        params = dict(case["params"] or [])
        params.update(dict(case.get("form") or []))
        q = params.get("q")
        if q is None:
            continue
        options = epochs.get(params.get("epoch"), 7)
        if params.get("pretty") == "true":
            options |= 8
        if params.get("chunked") == "true":
            options |= 0x10
            if params.get("chunk_size"):
                options |= 0x20
        if params.get("db") is None:
            options |= 0x40
        put("influxql", "golden-" + case["name"], bytes([options]) + q.encode())
    # The hard cases: each must end with a clear error, quickly.
    hard = {
        "deep-parens": "SELECT " + "(" * 300 + "usage_idle" + ")" * 300 + " FROM cpu",
        "deep-where": "SELECT * FROM cpu WHERE " + "(" * 300 + "host = 'a'" + ")" * 300,
        "unary-chain": "SELECT " + "-" * 400 + "1 FROM cpu",
        "huge-numbers": "SELECT usage_idle * 1e308 * 1e308 FROM cpu WHERE usage_idle > "
                        "99999999999999999999999 LIMIT 9223372036854775807 OFFSET 9223372036854775807",
        "huge-duration": "SELECT mean(v) FROM wide WHERE time > now() - 99999999999999999999w "
                         "GROUP BY time(9223372036854775807ns)",
        "regex-bomb": "SELECT * FROM cpu WHERE host =~ /(a+)+(b*)*(c?){1000}{1000}$/",
        "regex-nested-repeat": "SHOW MEASUREMENTS WITH MEASUREMENT =~ /((((a{100}){100}){100}){100})/",
        "group-by-1ns-wide": "SELECT count(v) FROM wide WHERE time >= -9223372036854775806 "
                             "AND time <= 9223372036854775806 GROUP BY time(1ns) fill(0)",
        "group-by-1ns-linear": "SELECT mean(usage_idle) FROM cpu WHERE time >= '1970-01-01T00:00:00Z' "
                               "GROUP BY time(1ns), * fill(linear)",
        # Many statements (at 999,999 buckets each, 45 of them took 42 s and
        # over 2 GB before the limit held per request: finding 5 of
        # tests/fuzz/README.md; that input costs 10-16 s here even now, so
        # the seed stays small).
        "many-statements": "; ".join(
            ["SELECT count(v) FROM wide WHERE time >= 0 AND time < 999 GROUP BY time(1ns)"] * 45),
        "tz": "SELECT mean(usage_idle) FROM cpu WHERE time > now() - 1h GROUP BY time(10m) tz('Europe/Oslo')",
        "derivative": "SELECT derivative(mean(usage_idle), 1ns) FROM cpu WHERE time > 0 GROUP BY time(1s)",
        "subquery": "SELECT max(m) FROM (SELECT mean(usage_idle) AS m FROM cpu GROUP BY time(1m), host)",
        "create-drop": "CREATE DATABASE x WITH DURATION 1h; DROP DATABASE golden; SHOW DATABASES",
    }
    for name, q in hard.items():
        put("influxql", "hard-" + name, b"\x00" + q.encode())


# ----------------------------------------------------- server-made files

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_server(binary, data_dir, config, writes):
    port = free_port()
    config_path = data_dir + ".toml"
    with open(config_path, "w") as f:
        f.write(config)
    proc = subprocess.Popen(
        [binary, "serve", "--config", config_path, "--data-dir", data_dir,
         "--listen", "127.0.0.1:%d" % port, "--shards", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for line in proc.stdout:
        if line.startswith(b"ringest: ready on"):
            break
    else:
        raise SystemExit("make_seeds: the server did not start")
    base = "http://127.0.0.1:%d" % port
    for path, body in writes:
        req = urllib.request.Request(base + path, data=body, method="POST")
        if body[:2] == b"\x1f\x8b":
            req.add_header("Content-Encoding", "gzip")
        urllib.request.urlopen(req).read()
    proc.send_signal(signal.SIGTERM)
    if proc.wait(60) != 0:
        raise SystemExit("make_seeds: the server did not stop cleanly")


def valid_prefix(segment):
    """The header and the records of a segment file, without the zeroed
    preallocated rest (what recovery would keep)."""
    pos = 64
    while pos + 24 <= len(segment) and segment[pos:pos + 4] == b"RWR1":
        pos += 24 + int.from_bytes(segment[pos + 8:pos + 12], "little")
    return segment[:pos]


def server_seeds(binary):
    now = time.time_ns()
    lines = lambda n, t0: b"".join(
        b"cpu,host=h%d,region=r%d usage=%d.5,n=%di,s=\"x\",b=true %d\n" % (i % 3, i % 2, i, i, t0 + i)
        for i in range(n))
    work = tempfile.mkdtemp(prefix="ringest-seeds-")
    try:
        # WAL only (persistence off, so nothing is truncated), two runs.
        wal_dir = os.path.join(work, "wal-only")
        config = "[persist]\nenabled = false\n"
        run_server(binary, wal_dir, config, [
            ("/query?q=CREATE+DATABASE+db2", b""),
            ("/write?db=db1", lines(5, now)),
            ("/write?db=db2&precision=ns", gzip.compress(lines(3, now + 10), mtime=0)),
        ])
        run_server(binary, wal_dir, config, [("/write?db=db1", lines(4, now + 100))])
        segments = []
        for shard_dir in ("wal/0", "catalog"):
            directory = os.path.join(wal_dir, shard_dir)
            for name in sorted(os.listdir(directory)):
                if name.endswith(".wal"):
                    with open(os.path.join(directory, name), "rb") as f:
                        data = valid_prefix(f.read())
                    if len(data) > 64:
                        segments.append((shard_dir.replace("/", "-"), name, data))
        for i, (where, name, data) in enumerate(segments):
            # Flags 0x00: as is, in the root; 0x04: in shard directory 0.
            put("wal_segment", "%s-%s" % (where, name), b"\x04" + data)
            put("wal_segment", "%s-%s-torn" % (where, name), b"\x00" + data[:len(data) - 5])
        shard = [s for s in segments if s[0] == "wal-0"]
        if len(shard) >= 2:
            # Two generations, fixed up (0x02) and named 1+i (0x08).
            put("wal_segment", "two-generations-fixed",
                b"\x0a" + shard[0][2] + b"SEG!" + shard[1][2])

        # Persisted catalog (persistence on; SIGTERM takes a last snapshot).
        persisted = os.path.join(work, "persisted")
        run_server(binary, persisted, "", [
            ("/query?q=CREATE+DATABASE+db2+WITH+DURATION+30d", b""),
            ("/write?db=db1", lines(5, now)),
            ("/write?db=db2", lines(3, now)),
        ])
        with open(os.path.join(persisted, "parquet", "_catalog.json"), "rb") as f:
            put("manifest", "server-catalog.json", f.read())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # The schema example of src/persist/manifest.rs: a run after a restart
    # with another shard count, which the server's seed above lacks.
    put("manifest", "doc-example.json", json.dumps({
        "format": "ringest-catalog", "version": 1, "written_ns": 1733280000000000000,
        "databases": [{"name": "db", "retention_ns": 259200000000000, "tables": [
            {"name": "cpu", "columns": [{"name": "host", "kind": "tag"},
                                        {"name": "usage", "kind": "float"}]}]},
                      {"name": "forever", "retention_ns": None, "tables": []}],
        "files": [{"path": "db=db/table=cpu/date=2024-12-04/00000000000000000007-00000000000000001234-s000.parquet",
                   "database": "db", "table": "cpu", "shard": 0, "shard_count": 2,
                   "generation": 7, "sequence": 1234, "rows": 1000, "bytes": 52000,
                   "time_min_ns": 1733270400000000000, "time_max_ns": 1733356799999999999}],
        "wal": {"floor_generation": 7,
                "runs": [{"generation": 8, "shard_count": 2, "persisted": [0]}],
                "positions": [{"shard": 0, "generation": 8, "sequence": 1234},
                              {"shard": 1, "generation": 8, "sequence": 17}]},
    }, indent=2).encode())
    put("manifest", "empty-manifest.json",
        b'{"format":"ringest-catalog","version":1,"written_ns":0,"databases":[],"files":[],'
        b'"wal":{"floor_generation":0,"runs":[],"positions":[]}}')


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "ringest")
    for target in ("http_head", "http_body", "line_protocol", "gzip", "wal_segment",
                   "manifest", "influxql"):
        shutil.rmtree(os.path.join(OUT, target), ignore_errors=True)
    http_seeds()
    line_protocol_seeds()
    gzip_seeds()
    influxql_seeds()
    server_seeds(binary)
    total = sum(os.path.getsize(os.path.join(d, f))
                for d, _, fs in os.walk(OUT) for f in fs)
    print("make_seeds: %d bytes under %s" % (total, OUT))


if __name__ == "__main__":
    main()
