#!/usr/bin/python3
"""Independent DKIM check for the signer tests, with python3-dkim (dkimpy).

usage: dkimverify.py MESSAGE RECORDS

RECORDS is a JSON object mapping a DNS name ("s._domainkey.example.org.")
to its TXT value, so that no DNS is queried. Every DKIM-Signature of MESSAGE
is verified; one line per signature is printed, and the exit status is 0
only if all of them verify.
"""
import json
import sys

import dkim


def main():
    with open(sys.argv[1], "rb") as f:
        message = f.read()
    with open(sys.argv[2]) as f:
        records = json.load(f)

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        value = records.get(name)
        return value.encode() if value is not None else None

    d = dkim.DKIM(message)
    count = sum(1 for k, _ in d.headers if k.lower() == b"dkim-signature")
    if count == 0:
        print("no DKIM-Signature")
        return 1
    failed = 0
    for idx in range(count):
        try:
            ok = d.verify(idx=idx, dnsfunc=dnsfunc)
        except dkim.DKIMException as e:
            ok, why = False, str(e)
        else:
            why = ""
        algo = d.signature_fields.get(b"a", b"?").decode()
        print("signature %d (%s, d=%s): %s %s" % (idx, algo, d.domain.decode() if d.domain else "?", "pass" if ok else "FAIL", why))
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
