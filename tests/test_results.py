"""Unit tier: the resumable results file."""

from ensemble.results import ResultsFile, config_hash


def test_append_is_idempotent_and_survives_a_cut_line(tmp_path):
    path = tmp_path / "r.jsonl"
    rf = ResultsFile(path)
    h = config_hash({"beam": 5})
    assert rf.append({"item_id": "a", "config_hash": h, "seed": 0, "correct": 1})
    assert not rf.append({"item_id": "a", "config_hash": h, "seed": 0, "correct": 0})
    assert rf.append({"item_id": "a", "config_hash": h, "seed": 1, "correct": 0})
    with open(path, "a") as fh:  # a writer killed mid-line
        fh.write('{"item_id": "b", "config_ha')
    again = ResultsFile(path)
    assert len(again) == 2 and [r["correct"] for r in again.rows()] == [1, 0]
    assert again.append({"item_id": "b", "config_hash": h, "seed": 0, "correct": 1})
    assert len(ResultsFile(path).rows()) == 3
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) != config_hash({"a": 2, "b": 2})


def test_two_writers_never_duplicate(tmp_path):
    path = tmp_path / "r.jsonl"
    first, second = ResultsFile(path), ResultsFile(path)  # both opened before either writes
    row = {"item_id": "x", "config_hash": "h", "seed": 0}
    assert first.append(row)
    assert not second.append(dict(row, other=1))
    assert len(ResultsFile(path).rows()) == 1
