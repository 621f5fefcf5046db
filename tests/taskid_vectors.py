"""Dragonfly task-ID vectors (dragonfly-proxy.md §2.2, §2.4, §2.5), shared by the tests of
dfrepo's task IDs (test_taskid.py) and of the stand-in peer's (test_standin_peer.py): both
implementations must give the same answers.
"""

from __future__ import annotations

__all__ = [
    "CANONICAL_B",
    "CLIENT",
    "CLIENT_V1_0_0",
    "CONTENT",
    "CONTENT_ID",
    "TABLE_II",
    "TABLE_III",
    "WORKED_EXAMPLE_BARE",
    "WORKED_EXAMPLE_ID",
]

# (i) dragonflyoss/client id_generator tests: url, piece_length, tag, application, filtered, revision, expected.
# These URLs canonicalize identically in both generations (A and B).
CLIENT = [
    ("https://example.com", 1024, "foo", "bar", [], "v1.0", "5844f27a257287e9b734256bb25603d8005422ced8c0377f15063ec11963b25f"),
    ("https://example.com", None, "foo", "bar", [], None, "06408fbf247ddaca478f8cb9565fe5591c28efd0994b8fea80a6a87d3203c5ca"),
    ("https://example.com", None, "foo", None, [], None, "3c3f230ef9f191dd2821510346a7bc138e4894bee9aee184ba250a3040701d2a"),
    ("https://example.com", None, None, "bar", [], None, "c9f9261b7305c24371244f9f149f5d4589ed601348fdf22d7f6f4b10658fdba2"),
    ("https://example.com", 1024, None, None, [], None, "9f7c9aafbc6f30f8f41a96ca77eeae80c5b60964b3034b0ee43ccf7b2f9e52b8"),
    ("https://example.com?foo=foo&bar=bar", None, None, None, ["foo", "bar"], None,
     "457b4328cde278e422c9e243f7bfd1e97f511fec43a80f535cf6b0ef6b086776"),
    ("https://example.com", None, None, None, [], "v1.0", "b171331534b80e0bf91da38ebbfcdbf4d177898f4b9beac44f14733e3f004d4e"),
]  # fmt: skip

# The v1.0.0 vector, same shape: sha256("https://example.com" + "foo" + "bar" + "1024" + "STANDARD").
CLIENT_V1_0_0 = ("https://example.com", 1024, "foo", "bar", [], None,
                 "27554d06dfc788c2c2c60e01960152ffbd4b145fc103fcb80b432b4dc238a6fe")  # fmt: skip

# (ii) canonicalization-B vectors: url, piece_length, tag, application, filtered, expected, also_A
# (also_A: the old generation A gives the same ID).
TABLE_II = [
    ("https://example.com/file.txt?Expires=e1&Signature=s1&foo=bar", 4194304, "tag1", "app1", ["Expires", "Signature"],
     "2a0c4c713d7f2f65f36b78b79c4b78a6bf5d5f67b76730ed13485d3271482f1c", True),
    ("https://example.com/file.txt", None, None, None, [],
     "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0", True),
    ("https://example.com/file.txt?z=9&b=2&a=1", None, "foo", "bar", ["z"],
     "8b3f6e9b9b8fe20903bced565cfd1d0aaef354a4c17573f0c2c1979210443f9d", False),
    ("https://example.com/file.txt?b=2&a=1&b=1", None, None, None, ["c"],
     "7c8801d0596be5e8f9449d5c4af23866c72fe5205119c0e5912981f3b16a37aa", False),
    ("https://example.com/file.txt?k=a b&m=x*y&n=c~d", 1024, None, None, ["none"],
     "6196a6846023f6d3c1e4d30f6c86f3d4186e4c664a33e5692b0e04e49b26a9af", False),
    ("https://example.com/file.txt?a=1&b=2", None, "foo", None, ["a", "b"],
     "c8f4b41117329d54af920010394f6f607bac707e933ab2f18d372e3dd4c7fcb3", True),
    ("https://example.com/file.txt?b=2&a=1", None, None, None, [],
     "980ee327518ccc5a7c30703e1a2232e8ba9047b39431f940636c85b6146f8b9a", True),
    ("https://example.com/file.txt?a=1;x&b=2", None, None, None, ["none"],
     "370933e9d7ab42b3ed90287213cd5f8def6091c8606da5b2dc79436061b06c34", False),
    ("http://www.xx.yy/path?u=f&x=y&m=z&x=s#size", None, None, None, ["x", "m"],
     "3570c3c808f06fd250a7a60634b9275d72c56edc248576508bb06264c2c65825", True),
    ("http://registry.example.com/v2/library/ubuntu/manifests/latest", None, None, None, [],
     "0b6500b31c7eea2929393e154299bc81ebbb613c24fa7f5f33e893d585f4d629", True),
]  # fmt: skip

# (iii) derived canonicalization-A vectors for the rows of (ii) where A and B differ:
# url, piece_length, tag, application, filtered, canonical A string, expected.
TABLE_III = [
    ("https://example.com/file.txt?z=9&b=2&a=1", None, "foo", "bar", ["z"],
     "https://example.com/file.txt?b=2&a=1", "46c55648464dc545e5dfe1bd12bf3102dfb251f18e004f7656537223b36094ee"),
    ("https://example.com/file.txt?b=2&a=1&b=1", None, None, None, ["c"],
     "https://example.com/file.txt?b=2&a=1&b=1", "0611a7dec7addbfb7985417d761366140bfd03eabaea8ccfa5eaa2cf855ce96a"),
    ("https://example.com/file.txt?k=a b&m=x*y&n=c~d", 1024, None, None, ["none"],
     "https://example.com/file.txt?k=a+b&m=x*y&n=c%7Ed", "61167f6a427c34a23a100a2055297005f7122de71b21294519b2695500d302f8"),
    ("https://example.com/file.txt?a=1;x&b=2", None, None, None, ["none"],
     "https://example.com/file.txt?a=1%3Bx&b=2", "2505099924a7b35e42ee91e3bd6f4ab73fd49559c784872b5eeb222cc69b8b3c"),
]  # fmt: skip

# Canonical strings of generation B (dragonfly-client-util/src/url/mod.rs tests, plus WHATWG
# normalization of scheme, host, default port and dot segments): url, filtered, canonical.
CANONICAL_B = [
    ("https://example.com/file.txt?z=9&b=2&a=1", ["z"], "https://example.com/file.txt?a=1&b=2"),
    ("https://example.com/file.txt?b=2&a=1&b=1", ["c"], "https://example.com/file.txt?a=1&b=2&b=1"),
    ("https://example.com?foo=foo", ["foo"], "https://example.com"),
    ("https://example.com/file.txt?k=a b&m=x*y&n=c~d", ["none"], "https://example.com/file.txt?k=a+b&m=x%2Ay&n=c~d"),
    ("http://www.xx.yy/path?u=f&x=y&m=z&x=s#size", ["x", "m"], "http://www.xx.yy/path?u=f#size"),
    ("http://www.xx.yy/path?u=f&x=y&m=z&x=s#size", [], "http://www.xx.yy/path?u=f&x=y&m=z&x=s#size"),
    ("https://example.com/file.txt?a=1;x&b=2", ["none"], "https://example.com/file.txt?b=2"),
    ("HTTPS://Example.COM:443/a/./b/../c", ["x"], "https://example.com/a/c"),
]

# X-Dragonfly-Content-For-Calculating-Task-ID: the ID is sha256 of the content alone.
CONTENT = "This is a test file"
CONTENT_ID = "e2d0fe1585a63ec6009c8016ff8dda8b17719a637405a4e23c0ff81339148249"

# dragonfly-proxy.md worked example: a presigned S3 URL with the default filters gives the ID
# of the bare URL.
WORKED_EXAMPLE_BARE = "https://my-bucket.s3.us-east-1.amazonaws.com/models/llama/model-00001-of-00002.safetensors"
WORKED_EXAMPLE_ID = "cbd6863e3dd3353557d3f2338201ee364475842674cdf8f813efb787989f4e1a"
