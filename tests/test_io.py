from pathlib import Path

import numpy as np
import pytest

from molguide.data import (
    Molecule,
    MoleculeFileError,
    read_molecules,
    read_sdf,
    read_smiles_csv,
    read_xyz,
    write_sdf,
)
from molguide.data.io import write_xyz

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"


def test_sdf_round_trip_keeps_coordinates_and_properties(qm9, tmp_path):
    mols = list(qm9.subset(np.arange(200, 260)))
    mols[3].properties["awkward"] = 0.1 + 0.2  # 0.30000000000000004 must survive
    mols[4].properties["tiny"] = 1.2345678901234567e-300
    path = tmp_path / "out.sdf"
    assert write_sdf(mols, path) == len(mols)
    report = read_sdf(path)
    assert not report.errors and len(report.molecules) == len(mols)
    for a, b in zip(mols, report.molecules):
        np.testing.assert_array_equal(a.atomic_numbers, b.atomic_numbers)
        assert np.abs(a.positions - b.positions).max() <= 1e-4
        assert a.properties == b.properties  # exact
        assert a.name == b.name


def test_xyz_round_trip(qm9, tmp_path):
    mols = list(qm9.subset(np.arange(5)))
    path = tmp_path / "out.xyz"
    write_xyz(mols, path)
    report = read_xyz(path)
    assert not report.errors and len(report.molecules) == 5
    for a, b in zip(mols, report.molecules):
        np.testing.assert_array_equal(a.atomic_numbers, b.atomic_numbers)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-7)
        assert a.properties == b.properties


def test_malformed_xyz_keeps_good_records_and_names_bad_ones():
    report = read_xyz(FIXTURES / "mixed_bad.xyz")
    assert len(report.molecules) == 5
    assert [e.record for e in report.errors] == [2, 4, 6]
    reasons = [e.reason for e in report.errors]
    assert "declares 3 atoms but has 2" in reasons[0]
    assert "unknown element 'Xx'" in reasons[1]
    assert "non-numeric coordinate 'abc'" in reasons[2]
    assert all(e.file.endswith("mixed_bad.xyz") and e.line for e in report.errors)
    assert report.summary().endswith("loaded 5 of 8 records, skipped 3")
    assert [m.name for m in report.molecules][0].startswith("gdb_")


def test_malformed_sdf_keeps_good_records_and_names_bad_ones():
    report = read_sdf(FIXTURES / "mixed_bad.sdf")
    assert len(report.molecules) == 2
    assert {e.record: e.reason for e in report.errors}.keys() == {2, 3, 4}
    by_record = {e.record: e.reason for e in report.errors}
    assert "too short" in by_record[2]
    assert "declares 9 atoms" in by_record[3]
    assert "unknown element 'Qq'" in by_record[4]
    assert report.molecules[0].properties["gap_eV"] > 0  # SD tags become properties


def test_smiles_csv_embeds_in_3d_and_reports_failures():
    report = read_smiles_csv(FIXTURES / "smiles.csv", workers=1)
    names = [m.name for m in report.molecules]
    assert names == ["ethanol", "benzene", "pyridine"]
    ethanol = report.molecules[0]
    assert ethanol.num_atoms == 9 and ethanol.properties == {"gap_eV": 9.1}
    assert np.ptp(ethanol.positions[:, 2]) > 0.1  # really 3D
    d_co = np.linalg.norm(ethanol.positions[1] - ethanol.positions[2])
    assert 1.35 < d_co < 1.50  # an MMFF C-O bond length
    reasons = {e.record: e.reason for e in report.errors}
    assert reasons.keys() == {2, 4, 5}
    assert "does not parse" in reasons[2]
    assert "empty SMILES" in reasons[4]
    assert "non-numeric value 'not-a-number'" in reasons[5]


def test_smiles_csv_is_seeded_and_pool_independent(tmp_path):
    path = tmp_path / "many.csv"
    smiles = ["CCO", "CC(=O)O", "c1ccccc1O", "CCN(CC)CC", "OCC(O)CO"] * 8
    path.write_text("smiles\n" + "\n".join(smiles) + "\n")
    serial = read_smiles_csv(path, workers=1, seed=3)
    pooled = read_smiles_csv(path, workers=2, seed=3)
    assert len(serial.molecules) == len(pooled.molecules) == 40
    for a, b in zip(serial.molecules, pooled.molecules):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)


@pytest.mark.parametrize(
    "content, message",
    [(None, "no such file"), ("", "file is empty"), ("   \n\n", "file is empty")],
)
def test_unusable_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "mols.sdf"
    if content is not None:
        path.write_text(content)
    with pytest.raises(MoleculeFileError, match=message):
        read_molecules(path)


def test_unknown_extension_and_binary_file(tmp_path):
    with pytest.raises(MoleculeFileError, match="unknown file type"):
        read_molecules(tmp_path / "x.pdbqt")
    binary = tmp_path / "x.xyz"
    binary.write_bytes(b"\x00\xff\xfe\x00")
    with pytest.raises(MoleculeFileError, match="not a text file"):
        read_molecules(binary)


def test_molecule_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="3 atoms but 2 positions"):
        Molecule(np.array([6, 1, 1]), np.zeros((2, 3)), name="bad")


# --------------------------------------------------------------------- records kept or named


def test_a_missing_record_separator_is_reported_not_merged(tmp_path):
    from molecule_files import zinc_style_sdf

    text = zinc_style_sdf(tmp_path / "zinc.sdf").read_text()
    path = tmp_path / "missing.sdf"
    path.write_text(text.replace("$$$$\n", "", 1))  # molecule 2 runs on after molecule 1's tags
    report = read_sdf(path)
    assert report.n_records == 3
    assert [m.name for m in report.molecules] == ["ZINC000000000002", "ZINC000000000003"]
    (error,) = report.errors
    assert error.record == 1 and error.line == 1 and "'$$$$'" in error.reason
    second_start = text.split("$$$$\n")[0].count("\n") + 1
    assert f"line {second_start}" in error.reason

    # Without data items the next molecule's header follows M  END directly.
    bare = "".join(block.split("M  END")[0] + "M  END\n" for block in text.split("$$$$\n") if block.strip())
    (tmp_path / "bare.sdf").write_text(bare + "$$$$\n")
    report = read_sdf(tmp_path / "bare.sdf")
    assert report.n_records == 3 and len(report.molecules) == 1
    assert [e.record for e in report.errors] == [1, 2]


def test_a_byte_that_is_not_utf8_costs_its_record_only(tmp_path):
    from molecule_files import zinc_style_sdf

    data = zinc_style_sdf(tmp_path / "zinc.sdf").read_bytes()
    bad = data.replace(b"ZINC000000000002\n", "Phénol\n".encode("latin-1"), 1)  # the title line
    (tmp_path / "latin1.sdf").write_bytes(bad)
    report = read_sdf(tmp_path / "latin1.sdf")
    assert [m.name for m in report.molecules] == ["ZINC000000000001", "ZINC000000000003"]
    (error,) = report.errors
    assert error.record == 2 and "byte 0xE9 is not UTF-8" in error.reason
    xyz = tmp_path / "latin1.xyz"
    xyz.write_bytes(b"2\nH2\nH 0 0 0\nH 0 0 0.74\n2\nd\xe9j\xe0\nH 0 0 0\nH 0 0 0.74\n")
    report = read_xyz(xyz)
    assert len(report.molecules) == 1 and "line 6: byte 0xE9" in report.errors[0].reason


def test_flat_and_absurd_coordinates_are_per_record_errors(tmp_path):
    xyz = tmp_path / "flat.xyz"
    xyz.write_text(
        "5\nmethane_drawn\nC 0 0 0\nH 1.09 0 0\nH -1.09 0 0\nH 0 1.09 0\nH 0 -1.09 0\n"
        "4\nformaldehyde\nC 0 0 0\nO 1.2 0 0\nH -0.5 0.9 0\nH -0.5 -0.9 0\n"  # planar: fine
        "5\nmethane\nC 0 0 0\nH 0.63 0.63 0.63\nH -0.63 -0.63 0.63\nH -0.63 0.63 -0.63\nH 0.63 -0.63 -0.63\n"
        "2\nfar\nH 0 0 0\nH 0 0 1e300\n"
    )
    report = read_xyz(xyz)
    assert [m.name for m in report.molecules] == ["formaldehyde", "methane"]
    flat, far = report.errors
    assert flat.record == 1 and "2D (all z = 0, and atom 1 (C) has four bonded neighbours" in flat.reason
    assert far.record == 4 and "atom 2: coordinate 1e+300 is out of range" in far.reason

    from molecule_files import zinc_style_sdf

    text = zinc_style_sdf(tmp_path / "zinc.sdf").read_text().splitlines(keepends=True)
    atom = next(k for k, line in enumerate(text) if line.rstrip().endswith("0  0  0  0  0  0"))
    text[atom] = "    1e300     0.0000    0.0000" + text[atom][30:]
    (tmp_path / "far.sdf").write_text("".join(text))
    report = read_sdf(tmp_path / "far.sdf")
    assert len(report.molecules) == 2 and "out of range" in report.errors[0].reason


def test_a_csv_row_that_is_not_utf8_costs_that_row_only(tmp_path):
    path = tmp_path / "mols.csv"
    path.write_bytes(b"smiles,name,gap\nCCO,ethanol,7.1\nCCN,\xe9thylamine,6.9\nC=O,formaldehyde,5.0\n")
    report = read_smiles_csv(path, workers=1)
    assert [m.name for m in report.molecules] == ["ethanol", "formaldehyde"]
    (error,) = report.errors
    assert error.record == 2 and error.line == 3 and "line 3: byte 0xE9 is not UTF-8" in error.reason
    smi = tmp_path / "mols.smi"
    smi.write_bytes(b"CCO ethanol\nCCN \xe9thylamine\n")
    report = read_smiles_csv(smi, workers=1)
    assert len(report.molecules) == 1 and "line 2: byte 0xE9" in report.errors[0].reason


def test_a_failed_write_leaves_the_earlier_file_as_it_was(qm9, tmp_path):
    from rdkit import Chem

    path = tmp_path / "out.sdf"
    write_sdf([qm9[0], qm9[1]], path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="molecule 2 has no conformer"):
        write_sdf([qm9[2], Chem.MolFromSmiles("CCO")], path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.sdf"]


def test_records_keep_their_line_endings_and_odd_characters(tmp_path):
    from molecule_files import zinc_style_sdf

    from molguide.data.io import with_data_items

    text = zinc_style_sdf(tmp_path / "zinc.sdf").read_text()
    crlf = text.replace("\n", "\r\n").replace("ZINC000000000001\r\n", "caf\u2028e\r\n", 1)
    (tmp_path / "crlf.sdf").write_bytes(crlf.encode())
    report = read_sdf(tmp_path / "crlf.sdf")
    assert len(report.molecules) == 3 and report.molecules[0].name == "caf\u2028e"
    record = report.molecules[0].source.text
    tagged = with_data_items(record, {"molguide_valid": "1"})
    assert tagged.startswith(record) and tagged.endswith(">  <molguide_valid>\r\n1\r\n\r\n")
    bare = "x\n     RDKit          3D\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n" + (
        "    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\nM  END\n"
    )
    assert with_data_items(bare, {"a": "1"}) == bare + ">  <a>\n1\n\n"  # no blank line after M  END


def test_utf16_and_byte_order_marks(tmp_path):
    (tmp_path / "w.csv").write_bytes("smiles,name\nCCO,ethanol\n".encode("utf-16"))
    with pytest.raises(MoleculeFileError, match="is UTF-16 text .* save it as UTF-8"):
        read_smiles_csv(tmp_path / "w.csv", workers=1)
    (tmp_path / "bom.csv").write_bytes("smiles,name\nCCO,ethanol\n".encode("utf-8-sig"))
    assert [m.name for m in read_smiles_csv(tmp_path / "bom.csv", workers=1).molecules] == ["ethanol"]


def test_reading_in_small_chunks_gives_the_same_records(tmp_path, monkeypatch):
    """Records, line numbers, a BOM and CRLF come out the same wherever chunks end."""
    from molecule_files import zinc_style_sdf

    from molguide.data import io

    text = zinc_style_sdf(tmp_path / "zinc.sdf").read_text().replace("\n", "\r\n")
    (tmp_path / "z.sdf").write_bytes(b"\xef\xbb\xbf" + text.encode())
    water = "3\n{}\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"
    xyz = water.format("w1").replace("\n", "\r\n") + "\r\n" + water.format("w2").replace("\n", "\r")
    (tmp_path / "w.xyz").write_bytes(xyz.encode())
    whole = read_sdf(tmp_path / "z.sdf"), read_xyz(tmp_path / "w.xyz")
    monkeypatch.setattr(io, "_CHUNK", 7)
    chunked = read_sdf(tmp_path / "z.sdf"), read_xyz(tmp_path / "w.xyz")
    for a, b in zip(whole, chunked):
        assert [m.name for m in a.molecules] == [m.name for m in b.molecules]
        sources = [[m.source and m.source.text for m in r.molecules] for r in (a, b)]
        assert sources[0] == sources[1]
    assert [m.name for m in chunked[1].molecules] == ["w1", "w2"]  # LF, CRLF and lone CR lines
    assert chunked[0].molecules[0].name == "ZINC000000000001"  # the BOM is not in the title
    (tmp_path / "nul.xyz").write_bytes(b"3\nw\n" + b"O 0 0 0\n" * 3 + b"\x00")
    with pytest.raises(MoleculeFileError, match="binary data at byte 28"):
        read_xyz(tmp_path / "nul.xyz")


def test_size_limit_from_argument_environment_and_default(tmp_path, monkeypatch):
    from molguide.data.io import DEFAULT_MAX_FILE_MB, max_file_bytes, read_molecules

    path = tmp_path / "w.xyz"
    path.write_text("3\nw\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n" * 40)  # 1.5 KB
    monkeypatch.delenv("MOLGUIDE_MAX_FILE_MB", raising=False)
    assert max_file_bytes() == DEFAULT_MAX_FILE_MB * 1024 * 1024
    with pytest.raises(MoleculeFileError, match=r"w.xyz: is 1.48 KB, over the 1.02 KB limit"):
        read_molecules(path, max_mb=0.001)
    monkeypatch.setenv("MOLGUIDE_MAX_FILE_MB", "0.001")
    with pytest.raises(MoleculeFileError, match="over the 1.02 KB limit"):
        read_molecules(path)
    assert len(read_molecules(path, max_mb=1).molecules) == 40  # the argument wins
    monkeypatch.setenv("MOLGUIDE_MAX_FILE_MB", "2")
    assert len(read_molecules(path).molecules) == 40


def test_files_that_are_not_regular_files_are_refused_without_reading(tmp_path):
    import os

    from molguide.data.io import read_molecules

    os.mkfifo(tmp_path / "p.sdf")
    (tmp_path / "z.xyz").symlink_to("/dev/zero")
    (tmp_path / "loop.sdf").symlink_to(tmp_path / "loop.sdf")
    (tmp_path / "gone.sdf").symlink_to(tmp_path / "nowhere.sdf")
    for name, message in [
        ("p.sdf", "is a FIFO"),
        ("z.xyz", "is a character device"),
        ("loop.sdf", "symlink loop"),
        ("gone.sdf", "broken symlink"),
        ("none.sdf", "no such file"),
    ]:
        with pytest.raises(MoleculeFileError, match=f"{name}: {message}"):
            read_molecules(tmp_path / name)


def test_closest_pair_matches_brute_force():
    from molguide.data.io import MIN_ATOM_DISTANCE, closest_pair

    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 60, 300):
        for spread in (1.0, 3.0, 10.0):
            pos = rng.uniform(0, spread, size=(n, 3))
            if n > 2 and rng.random() < 0.5:
                pos[:, 2] = 0.0  # planar, as z = 0 files are
            distances = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(n) * 1e9
            found = closest_pair(pos)
            if distances.min() >= MIN_ATOM_DISTANCE:
                assert found is None
            else:
                i, j, d = found
                assert i < j and d < MIN_ATOM_DISTANCE and np.isclose(d, distances[i, j])
    grid = np.stack(np.meshgrid(*[np.arange(12.0)] * 3), axis=-1).reshape(-1, 3)  # 1,728 atoms, 1 A apart
    assert closest_pair(grid) is None
    grid[1000] = grid[17] + [0.3, 0.0, 0.0]
    assert closest_pair(grid)[:2] == (17, 1000)


def test_isotope_labels_and_the_whole_periodic_table():
    from rdkit import Chem

    from molguide.data.elements import SYMBOLS, atomic_number, is_element_symbol, symbol

    table = Chem.GetPeriodicTable()
    assert [table.GetElementSymbol(z) for z in range(1, 119)] == list(SYMBOLS[1:])
    assert atomic_number("D") == atomic_number("t") == 1 and symbol(118) == "Og"
    assert atomic_number("hg") == 80 and not is_element_symbol("Q") and not is_element_symbol("Uue")
    with pytest.raises(ValueError, match="unknown element 'Xx'"):
        atomic_number("Xx")
