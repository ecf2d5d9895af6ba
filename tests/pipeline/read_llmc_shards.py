#!/usr/bin/env python3
"""An independent reader of llm.c's token shard format, for loom-data's output.

Usage: read_llmc_shards.py DIR EXPECTED.jsonl

Reads DIR/{train,val,test}_*.bin with nothing but the standard library, checks every header
(256 little-endian int32: magic 20240520 with uint16 tokens and version 1, or 20240801 with
uint32 tokens and version 7; then the token count, which must match the file size), follows
DIR/index.jsonl to each document's tokens, checks the token before each document is
<|endoftext|> (256 for loom-data's default byte-level tokenizer), decodes the bytes, and compares
them with EXPECTED.jsonl ({"id": ..., "text": ...} per line). Every expected id must be found,
kept documents must not overlap, and the index must account for every token of the shards.
Exits 0 and prints "ok: ..." when all holds, else prints what differs and exits 1.
"""
import array
import glob
import json
import os
import struct
import sys


def read_shard(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 1024:
        raise SystemExit(f"{path}: {len(data)} bytes is shorter than the 1024-byte header")
    magic, version, count = struct.unpack("<3i", data[:12])
    if magic == 20240520:
        assert version == 1, f"{path}: version {version} for uint16 tokens"
        typecode, width = "H", 2
    elif magic == 20240801:
        assert version == 7, f"{path}: version {version} for uint32 tokens"
        typecode, width = "I", 4
    else:
        raise SystemExit(f"{path}: magic {magic} is not llm.c's")
    if len(data) != 1024 + count * width:
        raise SystemExit(f"{path}: header says {count} tokens, file has {len(data) - 1024} bytes of tokens")
    tokens = array.array(typecode)
    tokens.frombytes(data[1024:])
    if sys.byteorder != "little":
        tokens.byteswap()
    return tokens


def main():
    out_dir, expected_path = sys.argv[1], sys.argv[2]
    streams, starts = {}, {}
    for split in ("train", "val", "test"):
        paths = sorted(glob.glob(os.path.join(out_dir, f"{split}_*.bin")))
        stream, offsets = array.array("I"), [0]
        for p in paths:
            t = read_shard(p)
            stream.extend(array.array("I", t))
            offsets.append(offsets[-1] + len(t))
        streams[split], starts[split] = stream, offsets
    EOT = 256
    decoded, used = {}, {s: 0 for s in streams}
    with open(os.path.join(out_dir, "index.jsonl"), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            e = json.loads(line)
            s = e["split"]
            at = starts[s][e["shard"]] + e["offset"]
            ids = streams[s][at:at + e["tokens"]]
            if len(ids) != e["tokens"]:
                raise SystemExit(f"index.jsonl:{n}: {e['id']} runs past the end of the {s} shards")
            if at == 0 or streams[s][at - 1] != EOT:
                raise SystemExit(f"index.jsonl:{n}: {e['id']} is not preceded by <|endoftext|>")
            if any(t >= 256 for t in ids):
                raise SystemExit(f"index.jsonl:{n}: {e['id']} holds a token that is not a byte")
            decoded[e["id"]] = bytes(ids.tolist()).decode("utf-8")
            used[s] += e["tokens"] + 1
    for s, stream in streams.items():
        if used[s] != len(stream):
            raise SystemExit(f"the {s} shards hold {len(stream)} tokens but the index accounts for {used[s]}")
    checked = 0
    with open(expected_path, encoding="utf-8") as f:
        for line in f:
            e = json.loads(line)
            if e["id"] not in decoded:
                continue  # dropped (decontaminated), which the C++ test checks against rejects.jsonl
            if decoded[e["id"]] != e["text"]:
                got = decoded[e["id"]]
                raise SystemExit(f"{e['id']}: decoded text differs from the expected document ({len(got)} vs {len(e['text'])} characters: {got[:40]!r} vs {e['text'][:40]!r})")
            checked += 1
    if checked == 0:
        raise SystemExit("no expected document was found in the shards")
    total = sum(len(s) for s in streams.values())
    print(f"ok: {len(decoded)} documents, {total} tokens, {checked} compared byte for byte")


if __name__ == "__main__":
    main()
