"""Bad-input cases: molecule files and what `evaluate` writes."""

from __future__ import annotations

from bad_input_common import (
    Case,
    evaluate_args,
    write,
    zinc,
)

CASES = [
    # ------------------------------------------------------------------ molecule files
    Case("no such file", lambda d: evaluate_args(str(d / "none.sdf")), 2, "none.sdf: no such file"),
    Case("empty file", lambda d: evaluate_args(write(d, "e.sdf", "")), 2, "e.sdf: file is empty"),
    Case("a folder", lambda d: evaluate_args(str(d)), 2, "is a folder"),
    Case("binary", lambda d: evaluate_args(write(d, "b.xyz", b"\x00\x01")), 2, "b.xyz: not a text file"),
    Case("unknown type", lambda d: evaluate_args(write(d, "m.pdb", "ATOM")), 2, "m.pdb: unknown file type"),
    Case(
        "csv without SMILES",
        lambda d: evaluate_args(write(d, "m.csv", "name,x\na,1\n")),
        2,
        "no SMILES column",
    ),
    Case(
        "no record loads",
        lambda d: evaluate_args(write(d, "bad.xyz", "1\nx\nQ 0 0 0\n")),
        2,
        "bad.xyz: none of the 1 records could be read",
    ),
    Case(
        "missing $$$$",
        lambda d: evaluate_args(write(d, "m.sdf", zinc(d).replace("$$$$\n", "", 1))),
        0,
        "record 1 (line 1): no '$$$$' line",
        "2 of 3",
    ),
    Case(
        "one title not UTF-8",
        lambda d: evaluate_args(
            write(d, "l.sdf", zinc(d).encode().replace(b"ZINC000000000003\n", b"caf\xe9\n", 1))
        ),
        0,
        "byte 0xE9 is not UTF-8",
        "2 of 3",
    ),
    Case(
        "2D XYZ record",
        lambda d: evaluate_args(
            write(
                d,
                "f.xyz",
                "5\nflat\nC 0 0 0\nH 1 0 0\nH -1 0 0\nH 0 1 0\nH 0 -1 0\n2\nok\nH 0 0 0\nH 0 0 0.74\n",
            )
        ),
        0,
        "coordinates are 2D",
        "1 of 2",
    ),
    Case(
        "absurd coordinate",
        lambda d: evaluate_args(
            write(d, "a.xyz", "2\nfar\nH 0 0 0\nH 0 0 1e300\n2\nok\nH 0 0 0\nH 0 0 0.74\n")
        ),
        0,
        "out of range",
        "1 of 2",
    ),
    Case(
        "--out is the input",
        lambda d: evaluate_args(p := write(d, "z.sdf", zinc(d)), "--out", p),
        2,
        "is the input file",
    ),
    Case(
        "--out is a folder",
        lambda d: evaluate_args(write(d, "z.sdf", zinc(d)), "--out", str(d)),
        2,
        "is a folder",
    ),
    Case(
        "--out cannot be written",
        lambda d: evaluate_args(write(d, "z.sdf", zinc(d)), "--out", "/proc/molguide/out.sdf"),
        2,
        "/proc/molguide: cannot write there",
    ),
]
