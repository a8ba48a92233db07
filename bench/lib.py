#!/usr/bin/env python3
"""Helpers for bench/run.sh (stdlib only).

Subcommands:
  ports N                       N distinct free 127.0.0.1 ports, one per line
  b64 TEXT                      base64 of TEXT
  json-field FIELD              read one JSON object on stdin, print FIELD
  fake-tokens N                 N well-formed app passwords (valid checksum, random id)
  wrk FILE                      parse wrk --latency output -> JSON
  h2load FILE LOGFILE           parse h2load output + its --log-file -> JSON
  median JSON...                median of each numeric field of several run results
  note JSON [TEXT]              TEXT plus failures / status mix of a load result
  record RESULTS KEY=VALUE...   append one result row (JSON line) to RESULTS
  table RESULTS                 render the results as one markdown table
  idle PORT N AUTH PID          open N keep-alive connections, one request each; RSS of PID
  rss PID                       VmRSS and VmHWM of PID in KiB
  rss-split PID                 PID's resident KiB by kind of mapping (program text, heap, ...)
"""

import base64
import json
import os
import random
import re
import resource
import selectors
import socket
import statistics
import sys
import time
import zlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def base62_checksum(text):
    value = zlib.crc32(text.encode()) & 0xFFFFFFFF
    out = []
    for _ in range(6):
        out.append(ALPHABET[value % 62])
        value //= 62
    return "".join(reversed(out))


def fake_token(rng):
    ident = "".join(rng.choice(ALPHABET) for _ in range(12))
    secret = "".join(rng.choice(ALPHABET) for _ in range(32))
    signed = "pgap_" + ident + secret
    return signed + base62_checksum(signed)


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[unit]


def parse_wrk(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    res = {"rps": None, "p50": None, "p99": None, "requests": 0, "non2xx": 0, "errors": 0}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    if m:
        res["p50"] = to_ms(m.group(1))
    m = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if m:
        res["p99"] = to_ms(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        res["errors"] = sum(int(g) for g in m.groups())
    # Status breakdown printed by bench/status.lua, when used.
    for code, count in re.findall(r"^status (\d{3}): (\d+)$", text, re.M):
        res["s" + code] = int(count)
    return res


def parse_h2load(path, log):
    text = open(path, encoding="utf-8", errors="replace").read()
    res = {"rps": None, "p50": None, "p99": None, "requests": 0, "non2xx": 0, "errors": 0}
    m = re.search(r"finished in [0-9.]+\w+, ([0-9.]+) req/s", text)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    if m:
        res["requests"] = int(m.group(2))
        res["errors"] = int(m.group(4)) + int(m.group(5))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        res["non2xx"] = int(m.group(3)) + int(m.group(4))
    lat = []
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    lat.append(int(parts[2]) / 1000.0)
    except OSError:
        pass
    if lat:
        lat.sort()
        res["p50"] = lat[len(lat) // 2]
        res["p99"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return res


def median_of(results):
    out = {}
    keys = set()
    for r in results:
        keys.update(r)
    for k in keys:
        vals = [r[k] for r in results if isinstance(r.get(k), (int, float))]
        if vals:
            out[k] = statistics.median(vals)
    out["runs"] = len(results)
    return out


def fmt_num(v, digits=0):
    if v is None:
        return ""
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def fmt_ms(v):
    if v is None:
        return ""
    if v < 1:
        return f"{v * 1000:.0f} µs"
    if v < 100:
        return f"{v:.2f} ms"
    return f"{v:.0f} ms"


def table(path):
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    # Baselines per group: the row with role=direct and the row with role=nginx.
    base = {}
    for r in rows:
        g = r.get("group") or r["scenario"]
        if r.get("role") in ("direct", "nginx") and r.get("value") is not None:
            base.setdefault((g, r["role"]), r)
    out = [
        "| scenario | target | value (median) | p50 | p99 | × direct | × nginx auth_basic {SHA} | p99 added over direct | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        g = r.get("group") or r["scenario"]
        v = r.get("value")
        unit = r.get("unit", "req/s")
        if v is None:
            val = "—"
        else:
            val = f"{fmt_num(v, 1 if v < 100 else 0)} {unit}"
        d, n = base.get((g, "direct")), base.get((g, "nginx"))
        x_direct = x_nginx = added = ""
        same = lambda b: b is not None and b is not r and b.get("unit", "req/s") == unit
        if not same(d):
            d = None
        if not same(n):
            n = None
        if v is not None and d is not None and d.get("value"):
            x_direct = f"{v / d['value']:.2f}"
        if v is not None and n is not None and n.get("value"):
            x_nginx = f"{v / n['value']:.2f}"
        if r.get("p99") is not None and d is not None and d.get("p99") is not None:
            added = f"{r['p99'] - d['p99']:+.2f} ms"
        out.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                *(str(c).replace("|", "\\|") for c in (
                    r["scenario"], r["target"], val, fmt_ms(r.get("p50")), fmt_ms(r.get("p99")),
                    x_direct, x_nginx, added, r.get("note", ""),
                ))
            )
        )
    return "\n".join(out)


def targets(path):
    """The performance targets of the issue that asked for this harness, each
    as met or not from this run's rows (only those the run measured)."""
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    by = {(r["scenario"], r["target"]): r for r in rows}

    def val(scenario, target, key="value"):
        r = by.get((scenario, target))
        return None if r is None else r.get(key)

    out = []

    def check(what, measured, ok, shown):
        if measured is None:
            return
        out.append(f"- {what}: {shown} — {'met' if ok else 'NOT met'}")

    pg, sha = val("h1-cached", "passgate"), val("h1-cached", "nginx auth_basic {SHA}")
    plain = val("h1-cached", "nginx proxy_pass, no auth")
    if pg and sha:
        check("cached h1 req/s >= 1.0x nginx auth_basic", pg, pg / sha >= 1.0, f"{pg / sha:.2f}x")
    if pg and plain:
        check("cached h1 req/s >= 0.9x nginx proxy_pass", pg, pg / plain >= 0.9, f"{pg / plain:.2f}x")
    for sc, suffix, desc in [("h1-1m", "1 MiB", "hyper backend"),
                             ("h1-1m-static", "static backend, 1 MiB", "static nginx backend")]:
        pg1, plain1 = val(sc, f"passgate, {suffix}"), val(sc, f"nginx proxy_pass, no auth, {suffix}")
        if pg1 and plain1:
            check(f"1 MiB responses >= 1.0x nginx proxy_pass ({desc})", pg1, pg1 / plain1 >= 1.0,
                  f"{pg1 / plain1:.2f}x")
    p99, d99 = val("h1-cached", "passgate", "p99"), val("h1-cached", "direct backend", "p99")
    if p99 is not None and d99 is not None:
        check("p99 added over direct <= 1 ms", p99, p99 - d99 <= 1.0, f"{p99 - d99:+.2f} ms")
    calm = val("flood", "passgate: valid client, calm")
    flooded = val("flood", "passgate: valid client under malformed flood")
    floor = val("flood", "passgate: valid client beside two busy loops")
    if calm and flooded:
        extra = f" (this machine's floor, busy loops only: {floor / calm:.1f}x)" if floor else ""
        check("valid p99 under malformed flood <= 2x calm", flooded, flooded / calm <= 2.0,
              f"{flooded / calm:.1f}x{extra}")
    rate = val("flood", "passgate: malformed-token flood, no rate limit")
    check("malformed tokens rejected >= 50,000/s", rate, rate is not None and rate >= 50000,
          f"{rate:,.0f}/s" if rate else "")
    gd, gp = val("git-clone", "git clone, direct"), val("git-clone", "git clone, passgate")
    if gd and gp:
        check("git clone time <= 1.05x direct", gp, gd / gp <= 1.05, f"{gd / gp:.2f}x")
    for kind in ("download", "upload"):
        d, p = val("stream", f"1 GiB {kind}, direct"), val("stream", f"1 GiB {kind}, passgate")
        if d and p:
            check(f"1 GiB {kind} >= 0.9x direct", p, p / d >= 0.9, f"{p / d:.2f}x")
    hwm = val("stream", "passgate peak RSS (VmHWM)")
    check("peak RSS during streams < 40 MiB", hwm, hwm is not None and hwm < 40, f"{hwm:.1f} MiB" if hwm else "")
    idle = val("idle", "passgate RSS after start + 1 request")
    check("idle RSS < 20 MiB", idle, idle is not None and idle < 20, f"{idle:.1f} MiB" if idle else "")
    return "\n".join(out)


def rss(pid):
    vals = {}
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                vals[k] = int(v.split()[0])
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


def rss_split(pid):
    """Resident KiB of pid by kind of mapping, from /proc/PID/smaps: the
    executable's text, read-only data and writable data, other files
    (shared libraries), the brk heap, and anonymous mappings (mmapped
    blocks, thread arenas and stacks); the rest ([stack], [vdso]) as other."""
    exe = os.path.realpath(f"/proc/{pid}/exe")
    kinds = {k: 0 for k in ("text", "rodata", "data", "libs", "heap", "anon", "other")}
    kind = "other"
    with open(f"/proc/{pid}/smaps", encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+ *(.*)$", line)
            if m:
                perms, name = m.group(1), m.group(2).strip()
                if name == exe:
                    kind = "text" if "x" in perms else "data" if "w" in perms else "rodata"
                elif name.startswith("/"):
                    kind = "libs"
                elif name == "[heap]":
                    kind = "heap"
                elif name:
                    kind = "other"
                else:
                    kind = "anon"
            elif line.startswith("Rss:"):
                kinds[kind] += int(line.split()[1])
    return kinds


def idle(port, n, auth, pid):
    """Opens n keep-alive connections (non-blocking connects, a few hundred in
    flight at once), sends one request on each, reads each response and keeps
    the connection open; then reports the server's RSS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 1024 if hard == resource.RLIM_INFINITY else min(hard, n + 1024)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    req = (
        f"GET /small HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\n\r\n"
    ).encode()
    sel = selectors.DefaultSelector()
    socks, bufs = [], {}
    ok = 0
    failures = {}
    connecting = answered = 0
    t0 = time.time()

    def fail(s, why):
        failures[why] = failures.get(why, 0) + 1
        sel.unregister(s)
        bufs.pop(s, None)

    def step(timeout):
        nonlocal ok, connecting, answered
        for key, events in sel.select(timeout):
            s, state = key.fileobj, key.data
            if state == "connect":
                connecting -= 1
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(s, f"connect errno {err}")
                    continue
                try:
                    s.send(req)
                except OSError as e:
                    fail(s, f"send {e.errno}")
                    continue
                sel.modify(s, selectors.EVENT_READ, "read")
                continue
            try:
                data = s.recv(65536)
            except OSError as e:
                fail(s, f"recv {e.errno}")
                continue
            if not data:
                fail(s, "closed")
                continue
            buf = bufs.get(s, b"") + data
            head, sep, body = buf.partition(b"\r\n\r\n")
            m = re.search(rb"content-length:\s*(\d+)", head, re.I)
            if not sep or (m and len(body) < int(m.group(1))):
                bufs[s] = buf
                continue
            answered += 1
            status = head[9:12].decode(errors="replace")
            if status == "200":
                ok += 1
                sel.unregister(s)
                bufs.pop(s, None)
            else:
                fail(s, f"status {status}")

    for i in range(n):
        while connecting >= 256:
            step(1.0)
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError as e:
            failures[f"connect {e.errno}"] = failures.get(f"connect {e.errno}", 0) + 1
            s.close()
            continue
        socks.append(s)
        connecting += 1
        sel.register(s, selectors.EVENT_WRITE, "connect")
        if i % 64 == 63:
            step(0)
    deadline = time.time() + 60
    while sel.get_map() and time.time() < deadline:
        step(0.5)
    opened = time.time() - t0
    unanswered = len(sel.get_map())
    time.sleep(1.0)
    vmrss, hwm = rss(pid)
    result = {
        "connections": len(socks), "ok": ok, "unanswered": unanswered,
        "failures": failures, "open_s": round(opened, 2), "rss_kib": vmrss, "hwm_kib": hwm,
    }
    for s in socks:
        s.close()
    print(json.dumps(result))


def load_note(r, extra):
    parts = [extra] if extra else []
    codes = sorted(k for k in r if k.startswith("s") and k[1:].isdigit())
    if codes:
        total = sum(r[k] for k in codes) or 1
        parts.append(", ".join(f"{k[1:]}: {100 * r[k] / total:.0f}%" for k in codes))
    elif r.get("non2xx"):
        parts.append(f"{r['non2xx']:.0f} non-2xx!")
    if r.get("errors"):
        parts.append(f"{r['errors']:.0f} socket errors")
    return "; ".join(parts)


BENCH_ROUTES = """[upstreams.backend]
url = "{url}"

[[routes]]
name = "all"
path = "/**"
access = "app-password"
scopes = ["repository:read"]
upstream = "backend"
"""


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "bench-routes":
        # The one upstream and route every bench passgate serves.
        print(BENCH_ROUTES.format(url=args[0]), end="")
    elif cmd == "ports":
        print("\n".join(str(p) for p in free_ports(int(args[0]))))
    elif cmd == "b64":
        print(base64.b64encode(args[0].encode()).decode())
    elif cmd == "json-field":
        print(json.load(sys.stdin)[args[0]])
    elif cmd == "fake-tokens":
        rng = random.SystemRandom()
        for _ in range(int(args[0])):
            print(fake_token(rng))
    elif cmd == "wrk":
        print(json.dumps(parse_wrk(args[0])))
    elif cmd == "h2load":
        print(json.dumps(parse_h2load(args[0], args[1])))
    elif cmd == "median":
        print(json.dumps(median_of([json.loads(a) for a in args])))
    elif cmd == "record":
        row = {}
        for a in args[1:]:
            k, _, v = a.partition("=")
            if k == "json":
                row.update(json.loads(v))
                continue
            try:
                row[k] = float(v) if re.fullmatch(r"-?[0-9.]+(e-?\d+)?", v) else v
            except ValueError:
                row[k] = v
        if "value" not in row and "rps" in row:
            row["value"] = row.pop("rps")
        with open(args[0], "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    elif cmd == "note":
        print(load_note(json.loads(args[0]), args[1] if len(args) > 1 else ""))
    elif cmd == "table":
        print(table(args[0]))
    elif cmd == "targets":
        print(targets(args[0]))
    elif cmd == "idle":
        idle(int(args[0]), int(args[1]), args[2], int(args[3]))
    elif cmd == "rss":
        r, h = rss(int(args[0]))
        print(r, h)
    elif cmd == "rss-split":
        print(" ".join(f"{k}={v}" for k, v in rss_split(int(args[0])).items()))
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main()
