#!/usr/bin/env python3
"""rfc9162_check.py: a second, independent RFC 9162 implementation (Python's hashlib only) that
test_ingress_e2e runs over tp-ingress's answers. Input: a JSON file
{"leaves": [payload hex in leaf order], "checkpoint": {...GET /api/receipts/checkpoint},
 "inclusions": [...GET /api/receipts/{id}/inclusion answers, each with "payloadHex" added],
 "consistency": [...GET /api/receipts/consistency answers]}.
Checks: the checkpoint root is the Merkle tree hash of all leaves; every inclusion proof leads
from the receipt's own leaf hash (recomputed from its DSSE payload) to the root of its tree
size; every consistency proof links the two roots. Prints "ok" and exits 0, or names the first
failure and exits 1."""
import base64
import hashlib
import json
import sys

TYPE = b"application/vnd.in-toto+json"


def sha(b):
    return hashlib.sha256(b).digest()


def node(left, right):
    return sha(b"\x01" + left + right)


def leaf_hash(payload):
    pae = b"DSSEv1 %d %s %d " % (len(TYPE), TYPE, len(payload)) + payload
    return sha(b"\x00" + pae)


def mth(leaves):  # RFC 9162 section 2.1.1, straight from the definition
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def root_from_inclusion(index, size, leaf, proof):  # section 2.1.3.2
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def consistent(m, n, proof, r1, r2):  # section 2.1.4.2
    if m == n:
        return not proof and r1 == r2
    if m < 1 or m > n or not proof:
        return False
    if m & (m - 1) == 0:
        proof = [r1] + proof
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == r1 and sr == r2


def b64(s):
    return base64.b64decode(s, validate=True)


def main():
    doc = json.load(open(sys.argv[1]))
    leaves = [leaf_hash(bytes.fromhex(h)) for h in doc["leaves"]]
    cp = doc["checkpoint"]
    if cp["treeSize"] != len(leaves) or b64(cp["rootHash"]) != mth(leaves):
        sys.exit("checkpoint: root of %d leaves differs" % cp["treeSize"])
    for inc in doc["inclusions"]:
        leaf = leaf_hash(bytes.fromhex(inc["payloadHex"]))
        if b64(inc["leafHash"]) != leaf:
            sys.exit("inclusion %s: leaf hash differs" % inc["receiptId"])
        size = inc["treeSize"]
        root = root_from_inclusion(inc["leafIndex"], size, leaf, [b64(p) for p in inc["proof"]])
        if root is None or root != b64(inc["rootHash"]) or root != mth(leaves[:size]):
            sys.exit("inclusion %s at size %d does not verify" % (inc["receiptId"], size))
    for c in doc["consistency"]:
        m, n = c["from"], c["to"]
        r1, r2 = mth(leaves[:m]), mth(leaves[:n])
        if b64(c["fromRoot"]) != r1 or b64(c["toRoot"]) != r2 or \
                not consistent(m, n, [b64(p) for p in c["proof"]], r1, r2):
            sys.exit("consistency %d -> %d does not verify" % (m, n))
    print("ok: %d leaves, %d inclusion proofs, %d consistency proofs"
          % (len(leaves), len(doc["inclusions"]), len(doc["consistency"])))


main()
