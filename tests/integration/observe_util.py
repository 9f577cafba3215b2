# Licensed under the Apache License, Version 2.0.
"""Helpers for the observability tests: a strict reader of the Prometheus
text exposition format (version 0.0.4), event makers and a way to tell
which httpd child holds a client connection."""

import http.client
import json
import math
import re
import uuid

import stack

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
NUMBER_RE = re.compile(r"(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
                       r"|[+-]?Inf|NaN)\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class ExpositionError(AssertionError):
    """The text breaks the Prometheus exposition format."""


class Family:
    def __init__(self, name):
        self.name = name
        self.type = None
        self.help = None
        self.samples = []  # (sample name, labels dict, value)

    def __repr__(self):
        return "Family(%s %s, %d samples)" % (self.name, self.type,
                                              len(self.samples))


def _value(text, where):
    if not NUMBER_RE.match(text):
        raise ExpositionError("%s: %r is not a number" % (where, text))
    return float(text.replace("Inf", "inf").replace("NaN", "nan"))


def _labels(text, where):
    """Parses `name="value",...` (the part inside the braces)."""
    labels = {}
    i = 0
    while i < len(text):
        m = LABEL_RE.match(text, i)
        if not m:
            raise ExpositionError("%s: bad label name at %r" % (where,
                                                                 text[i:]))
        name = m.group(0)
        i = m.end()
        if text[i:i + 2] != '="':
            raise ExpositionError("%s: expected =\" after %s" % (where, name))
        i += 2
        value = []
        while True:
            if i >= len(text):
                raise ExpositionError("%s: unterminated label value" % where)
            c = text[i]
            if c == '"':
                i += 1
                break
            if c == "\\":
                nxt = text[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ExpositionError("%s: bad escape \\%s" % (where, nxt))
                value.append("\n" if nxt == "n" else nxt)
                i += 2
                continue
            if c == "\n":
                raise ExpositionError("%s: newline in label value" % where)
            value.append(c)
            i += 1
        if name in labels:
            raise ExpositionError("%s: label %s twice" % (where, name))
        labels[name] = "".join(value)
        if i < len(text):
            if text[i] != ",":
                raise ExpositionError("%s: expected , at %r" % (where,
                                                                 text[i:]))
            i += 1
    return labels


def _split_sample(line, where):
    m = re.match(r"([^{\s]+)", line)
    if not m:
        raise ExpositionError("%s: no metric name" % where)
    name, rest = m.group(1), line[m.end():]
    if not NAME_RE.match(name):
        raise ExpositionError("%s: bad metric name %r" % (where, name))
    labels = {}
    if rest.startswith("{"):
        end = _closing_brace(rest, where)
        labels = _labels(rest[1:end], where)
        rest = rest[end + 1:]
    parts = rest.split()
    if not rest[:1].isspace() or len(parts) not in (1, 2):
        raise ExpositionError("%s: expected `value [timestamp]` after the "
                              "name" % where)
    if len(parts) == 2 and not re.match(r"-?\d+\Z", parts[1]):
        raise ExpositionError("%s: bad timestamp %r" % (where, parts[1]))
    return name, labels, _value(parts[0], where)


def _closing_brace(text, where):
    quoted = False
    i = 1
    while i < len(text):
        c = text[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "}" and not quoted:
            return i
        i += 1
    raise ExpositionError("%s: unterminated label set" % where)


def _family_of(sample, families, current):
    """The family a sample name belongs to (histogram/summary suffixes)."""
    if current is not None:
        if sample == current.name:
            return current
        for suffix in ("_bucket", "_sum", "_count"):
            if (sample == current.name + suffix
                    and current.type in ("histogram", "summary")):
                return current
    return families.get(sample)


def _canonical_float(v):
    """Go's strconv.FormatFloat(v, 'g', -1, 64) for the values used as
    bucket bounds: 0.001, 0.25, 1, 10, +Inf."""
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    text = repr(v)
    return text[:-2] if text.endswith(".0") else text


def _check_histogram(fam):
    buckets, total, count = [], None, None
    for name, labels, value in fam.samples:
        if name.endswith("_bucket"):
            if set(labels) != {"le"}:
                raise ExpositionError("%s: bucket labels %s" % (name, labels))
            le = _value(labels["le"], name)
            if labels["le"] != _canonical_float(le):
                raise ExpositionError("%s: le=%r is not written canonically "
                                      "(%r)" % (name, labels["le"],
                                                _canonical_float(le)))
            buckets.append((le, value))
        elif name.endswith("_sum"):
            total = value
        elif name.endswith("_count"):
            count = value
    if not buckets or total is None or count is None:
        raise ExpositionError("%s: histogram without buckets, _sum or _count"
                              % fam.name)
    bounds = [b for b, _ in buckets]
    if bounds != sorted(set(bounds)) or not math.isinf(bounds[-1]):
        raise ExpositionError("%s: bucket bounds %s not increasing up to "
                              "+Inf" % (fam.name, bounds))
    values = [v for _, v in buckets]
    if values != sorted(values):
        raise ExpositionError("%s: buckets not cumulative: %s"
                              % (fam.name, values))
    if values[-1] != count:
        raise ExpositionError("%s: +Inf bucket %s != _count %s"
                              % (fam.name, values[-1], count))
    if total < 0 or (count == 0 and total != 0):
        raise ExpositionError("%s: _sum %s with _count %s"
                              % (fam.name, total, count))


def parse_prometheus(text):
    """Parses and checks exposition text; returns {family name: Family}.

    Beyond the format itself this insists on what this module promises:
    every family has HELP and TYPE before its samples, families are
    contiguous, no series twice, counters finite and not negative,
    histograms complete and cumulative with canonical `le` values.
    """
    if not text.endswith("\n"):
        raise ExpositionError("the text does not end with a newline")
    families = {}
    current = None
    seen = set()
    for no, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d" % no
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
                continue  # a comment
            kind, name = parts[1], parts[2]
            rest = parts[3] if len(parts) > 3 else ""
            if not NAME_RE.match(name):
                raise ExpositionError("%s: bad metric name %r" % (where,
                                                                   name))
            fam = families.get(name)
            if fam is None:
                fam = families[name] = Family(name)
            elif fam is not current:
                raise ExpositionError("%s: family %s is not contiguous"
                                      % (where, name))
            if fam.samples:
                raise ExpositionError("%s: %s after samples of %s"
                                      % (where, kind, name))
            if kind == "HELP":
                if fam.help is not None:
                    raise ExpositionError("%s: second HELP for %s"
                                          % (where, name))
                fam.help = rest
            else:
                if fam.type is not None:
                    raise ExpositionError("%s: second TYPE for %s"
                                          % (where, name))
                if rest not in TYPES:
                    raise ExpositionError("%s: unknown type %r" % (where,
                                                                    rest))
                fam.type = rest
            current = fam
            continue
        name, labels, value = _split_sample(line, where)
        fam = _family_of(name, families, current)
        if fam is None:
            raise ExpositionError("%s: sample %s has no HELP/TYPE before it"
                                  % (where, name))
        if fam is not current:
            raise ExpositionError("%s: sample %s outside its family's block"
                                  % (where, name))
        if fam.type is None or fam.help is None:
            raise ExpositionError("%s: family %s lacks TYPE or HELP"
                                  % (where, fam.name))
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ExpositionError("%s: series %s%s twice" % (where, name,
                                                             labels))
        seen.add(key)
        if fam.type == "counter" and not (value >= 0
                                          and math.isfinite(value)):
            raise ExpositionError("%s: counter %s = %s" % (where, name,
                                                           value))
        fam.samples.append((name, labels, value))
    for fam in families.values():
        if not fam.samples:
            raise ExpositionError("family %s has no samples" % fam.name)
        if fam.type == "histogram":
            _check_histogram(fam)
    return families


def sample(families, name, **labels):
    """The value of one series (sample name and exact labels)."""
    for fam in families.values():
        for n, l, v in fam.samples:
            if n == name and l == labels:
                return v
    raise KeyError("no series %s%s" % (name, labels))


def series(families):
    """{(sample name, sorted label items): value} of every sample."""
    out = {}
    for fam in families.values():
        for n, l, v in fam.samples:
            out[(n, tuple(sorted(l.items())))] = v
    return out


# ---------------------------------------------------------------- events


def event(site, type_="serve", cid=None, time="2026-11-20T10:00:00Z",
          **extra):
    ev = {"time": time, "type": type_,
          "correlation_id": cid or str(uuid.uuid4()), "site_id": site}
    ev.update(extra)
    return ev


def events(site, n, type_="serve", time="2026-11-20T10:00:00Z"):
    return [event(site, type_, time=time) for _ in range(n)]


def ndjson(evs):
    return "".join(json.dumps(e) + "\n" for e in evs).encode()


# ---------------------------------------------------------------- processes


def _tcp_inodes(local_port, remote_port):
    """Socket inodes for 127.0.0.1:local_port <-> 127.0.0.1:remote_port."""
    want_l = "0100007F:%04X" % local_port
    want_r = "0100007F:%04X" % remote_port
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for row in f:
            cols = row.split()
            if cols[1] == want_l and cols[2] == want_r:
                inodes.add(cols[9])
    return inodes


def connection_owner(server_port, conn, pids):
    """The pid among pids whose descriptors hold the server side of conn
    (an open Conn), or None."""
    client_port = conn.c.sock.getsockname()[1]
    owners = stack.socket_holders(pids, _tcp_inodes(server_port,
                                                    client_port))
    return owners[0] if owners else None


class Conn:
    """One kept-alive HTTP/1.1 connection (no proxy, no pooling)."""

    def __init__(self, host, port, timeout=30):
        self.c = http.client.HTTPConnection(host, port, timeout=timeout)
        self.c.connect()

    def request(self, method, path, body=None, headers=None):
        self.c.request(method, path, body=body, headers=headers or {})
        r = self.c.getresponse()
        data = r.read()
        return r.status, dict(r.getheaders()), data

    def post_json(self, path, obj):
        return self.request("POST", path, json.dumps(obj).encode(),
                            {"Content-Type": "application/json"})

    def close(self):
        self.c.close()
