"""Captions: finals only when piped; the partial redrawn in place on a terminal."""

import io
import os
import pty
import re
import select
import subprocess
import sys

from asr_stream.output.captions import Captions
from asr_stream.stages import Hypothesis, Word
from conftest import REPO, demo_clip, wer

WORDS = (Word("hello", 0.5, 0.9), Word("world.", 1.0, 1.4))


def test_piped_output_has_finals_only():
    out = io.StringIO()
    cap = Captions(out, live=False)
    cap.update(Hypothesis(0, WORDS[:1], 0, False))
    cap.update(Hypothesis(0, WORDS, 2, True))
    cap.update(Hypothesis(1, (), 0, True))  # an utterance that came to nothing prints nothing
    cap.close()
    assert out.getvalue() == "hello world.\n"


def test_timestamps():
    out = io.StringIO()
    cap = Captions(out, timestamps=True, live=False)
    cap.update(Hypothesis(0, WORDS, 2, True))
    assert out.getvalue() == "[00:00.500 --> 00:01.400] hello world.\n"


def test_terminal_redraws_partials_in_place_then_commits_finals():
    wav, ref = demo_clip()
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "asr_stream", "--audio_path", str(wav), "--denoiser", "none",
                             "--quiet"], stdout=slave, stderr=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm", "COLUMNS": "200"})
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0, proc.stderr.read().decode()
    screen = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in screen or "\r" in screen  # partials are redrawn in place
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    final_line = [line for line in plain.replace("\r", "\n").split("\n") if "exhibition" in line.lower()][-1]
    assert wer([ref], [final_line]) < 0.1
    # a partial showed the start of the sentence before the final was printed
    assert screen.lower().index("printing") < screen.lower().index("exhibition")


def test_punctuation_attaches_to_its_word():
    from asr_stream.stages import join_words

    assert join_words(["for", "dinner", ",", "turnips"]) == "for dinner, turnips"
    assert join_words(["no", "longer", "."]) == "no longer."
    assert join_words(["types.", "."]) == "types."
    assert join_words([" a ", "", "b"]) == "a b"
    hyp = Hypothesis(0, (Word("dinner", 0, 1), Word(",", 1, 1), Word("turnips", 1, 2)), 3, True)
    out = io.StringIO()
    cap = Captions(out, live=False)
    cap.update(hyp)
    assert out.getvalue() == "dinner, turnips\n"
    glued = (Word("the", 0, 0.2), Word("rain", 0.2, 0.5), Word("drops", 0.5, 0.8, glued=True), Word(".", 0.8, 0.8, True))
    assert join_words(glued) == "the raindrops."
