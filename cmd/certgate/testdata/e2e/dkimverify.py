#!/usr/bin/python3
"""Verify every DKIM signature of messages with python3-dkim (dkimpy).

The end-to-end tests use it as the verifier that is not go-msgauth: Debian's
dkimverify reads keys from DNS only, so this script takes them from a JSON
file instead.

usage: dkimverify.py RECORDS.json MESSAGE...

RECORDS.json maps a key's DNS name to its TXT value, e.g.
  {"s1._domainkey.ca.example": "v=DKIM1; k=rsa; p=MIIB..."}
(a trailing dot on the name is optional). For every DKIM-Signature of every
message it prints one JSON line:
  {"file": ..., "index": 0, "d": ..., "s": ..., "a": ..., "ok": true, "error": ""}
It exits 0 when every signature verifies, 1 when one does not or a message
has no signature at all, 2 on bad usage.
"""

import json
import logging
import sys

import dkim


class Collect(logging.Handler):
    """Keeps what dkimpy logs while verifying: the reason for a failure."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def tags(value):
    """Parses a DKIM-Signature value into its tags (RFC 6376 3.2)."""
    out = {}
    for part in value.split(b";"):
        if b"=" in part:
            k, v = part.split(b"=", 1)
            out[k.strip().decode("ascii", "replace")] = b"".join(v.split()).decode("ascii", "replace")
    return out


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        records = {k.rstrip(".").lower(): v for k, v in json.load(f).items()}
    lookups = []

    def dnsfunc(name, timeout=5):
        key = name.decode("ascii") if isinstance(name, bytes) else name
        key = key.rstrip(".").lower()
        lookups.append(key)
        value = records.get(key)
        return value.encode("ascii") if value is not None else None

    failed = False
    for path in argv[2:]:
        with open(path, "rb") as f:
            msg = f.read()
        sigs = [v for k, v in dkim.DKIM(msg).headers if k.lower() == b"dkim-signature"]
        if not sigs:
            print(json.dumps({"file": path, "index": -1, "ok": False, "error": "no DKIM-Signature"}))
            failed = True
            continue
        for i, value in enumerate(sigs):
            t = tags(value)
            log = Collect()
            logger = logging.getLogger("dkimverify.%d" % len(lookups))
            logger.propagate = False
            logger.setLevel(logging.DEBUG)
            logger.addHandler(log)
            try:
                ok = dkim.DKIM(msg, logger=logger).verify(idx=i, dnsfunc=dnsfunc)
                # dkimpy says why in its last debug line; keep that, briefly.
                err = "" if ok else (log.lines[-1] if log.lines else "signature did not verify")[-300:]
            except Exception as e:  # dkimpy raises for malformed signatures and keys
                ok, err = False, "%s: %s" % (type(e).__name__, e)
            logger.removeHandler(log)
            print(json.dumps({"file": path, "index": i, "d": t.get("d", ""), "s": t.get("s", ""),
                              "a": t.get("a", ""), "ok": bool(ok), "error": err}))
            failed = failed or not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
