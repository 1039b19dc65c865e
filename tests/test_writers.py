import json

import pytest

from asr_stream.errors import UserError
from asr_stream.output.writers import CaptionWriter, _stamp
from asr_stream.stages import Hypothesis, Word


def test_stamps():
    assert _stamp(3661.5, ",") == "01:01:01,500"
    assert _stamp(0.0014, ".") == "00:00:00.001"


def test_partials_are_not_written_and_file_is_flushed_per_final(tmp_path):
    w = CaptionWriter(tmp_path / "c.jsonl")
    w.write(Hypothesis(0, (Word("a", 0.0, 0.2),), 0, False))
    w.write(Hypothesis(0, (Word("a", 0.0, 0.2), Word("b", 0.3, 0.5)), 2, True))
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]  # before close
    assert rows == [{"start": 0.0, "end": 0.5, "text": "a b",
                     "words": [{"text": "a", "start": 0.0, "end": 0.2}, {"text": "b", "start": 0.3, "end": 0.5}]}]
    w.close()


def test_unknown_extension(tmp_path):
    with pytest.raises(UserError, match="unsupported extension"):
        CaptionWriter(tmp_path / "c.doc")
