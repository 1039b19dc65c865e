"""NeMo cache-aware Conformer-CTC as a streaming recogniser: small models built from config
(random weights), saved to .nemo and loaded back the way users load theirs."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch

from asr_stream.errors import UserError
from conftest import demo_clip, load_16k, run_cli

nemo_models = pytest.importorskip("nemo.collections.asr.models", reason="nemo_toolkit is not installed")

CHARS = list(" abcdefghijklmnopqrstuvwxyz'")


def tiny_config(decoder_vocab: list[str], tokenizer_dir: str | None = None):
    from omegaconf import OmegaConf

    cfg = {
        "sample_rate": 16000,
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": 16000, "normalize": "NA", "window_size": 0.025, "window_stride": 0.01,
                         "window": "hann", "features": 80, "n_fft": 512, "log": True, "frame_splicing": 1,
                         "dither": 0.0, "pad_to": 0, "pad_value": 0.0},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "n_layers": 2,
                    "d_model": 64, "subsampling": "dw_striding", "subsampling_factor": 8,
                    "subsampling_conv_channels": 64, "ff_expansion_factor": 2, "self_attention_model": "rel_pos",
                    "n_heads": 4, "att_context_size": [[70, 1], [70, 0]], "att_context_style": "chunked_limited",
                    "conv_kernel_size": 9, "conv_norm_type": "layer_norm", "conv_context_size": "causal",
                    "causal_downsampling": True, "dropout": 0.0, "dropout_pre_encoder": 0.0, "dropout_emb": 0.0,
                    "dropout_att": 0.0, "xscaling": True},
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": 64,
                    "num_classes": len(decoder_vocab), "vocabulary": decoder_vocab},
    }
    if tokenizer_dir:
        cfg["tokenizer"] = {"dir": tokenizer_dir, "type": "bpe"}
    else:
        cfg["labels"] = decoder_vocab
    return OmegaConf.create(cfg)


@pytest.fixture(scope="module")
def char_model_path(tmp_path_factory):
    """A tiny cache-aware FastConformer-CTC (characters), random weights with the blank made
    less likely so that it emits tokens, saved as a .nemo."""
    torch.manual_seed(0)
    model = nemo_models.EncDecCTCModel(cfg=tiny_config(CHARS)).eval()
    with torch.no_grad():
        model.decoder.decoder_layers[0].bias[-1] -= 3.0
    path = tmp_path_factory.mktemp("nemo") / "tiny.nemo"
    model.save_to(str(path))
    return path


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_16k(demo_clip()[0])


def _offline(model, audio: np.ndarray, context: list[int]) -> torch.Tensor:
    from asr_stream.recognizers.nemo_model import ctc_head

    model.encoder.set_default_att_context_size(context)
    with torch.no_grad():
        feats, length = model.preprocessor(input_signal=torch.from_numpy(audio)[None],
                                           length=torch.tensor([len(audio)]))
        encoded, _ = model.encoder(audio_signal=feats, length=length)
        return ctc_head(model)(encoder_output=encoded)[0]


def _greedy_text(log_probs: torch.Tensor, vocabulary: list[str]) -> list[str]:
    blank, previous, out = len(vocabulary), len(vocabulary), []
    for label in log_probs.argmax(-1).tolist():
        if label != blank and label != previous:
            out.append(vocabulary[label])
        previous = label
    return "".join(out).split()


def _stream(recognizer, audio: np.ndarray, block: int = 2560):
    hyps = []
    for i in range(0, len(audio), block):
        recognizer.accept_waveform(audio[i:i + block])
        hyps += recognizer.decode()
    return hyps + recognizer.finish()


def test_streaming_features_equal_the_offline_preprocessor(char_model_path, speech):
    from asr_stream.recognizers.nemo_features import StreamingFeatures
    from asr_stream.recognizers.nemo_model import load_nemo_model

    model = load_nemo_model(str(char_model_path))
    features = StreamingFeatures(model.preprocessor)
    rng = np.random.default_rng(0)
    parts, i = [], 0
    while i < len(speech):  # ragged blocks, as a microphone delivers them, made into frames at random
        n = int(rng.integers(1, 3000))
        features.push(speech[i:i + n])
        i += n
        if rng.random() < 0.3:
            parts.append(features.frames())
    streamed = torch.cat(parts + [features.finish()], 1)
    with torch.no_grad():
        offline, length = model.preprocessor(input_signal=torch.from_numpy(speech)[None],
                                             length=torch.tensor([len(speech)]))
    assert streamed.shape[1] == int(length)
    assert (streamed - offline[0, :, :streamed.shape[1]]).abs().max() < 1e-4


@pytest.mark.parametrize("lookahead_ms", [80, 0])
def test_cache_aware_streaming_matches_the_offline_forward(char_model_path, speech, lookahead_ms):
    from asr_stream.recognizers.nemo_cache_aware import CacheAwareCtcRecognizer
    from asr_stream.recognizers.nemo_model import load_nemo_model

    model = load_nemo_model(str(char_model_path))
    recognizer = CacheAwareCtcRecognizer(model, lookahead_ms=lookahead_ms, keep_log_probs=True,
                                         restart_at_endpoints=False)
    hyps = _stream(recognizer, speech)
    streamed = torch.cat(recognizer.log_probs, 0)
    offline = _offline(model, speech, recognizer.lookaheads_ms[lookahead_ms])
    assert streamed.shape == offline.shape
    tolerance = 1e-4 if lookahead_ms else 0.1  # with no look-ahead NeMo's chunked attention differs slightly
    assert (streamed - offline).abs().max() < tolerance
    words = [w.text for h in hyps if h.final for w in h.words]
    assert words == _greedy_text(offline, CHARS)
    assert len(words) > 10  # the biased random model does emit text
    finals = [h for h in hyps if h.final]
    assert all(h.stable == len(h.words) for h in finals)
    starts = [w.start for h in finals for w in h.words]
    assert starts == sorted(starts) and starts[-1] < len(speech) / 16000


def test_step_state_does_not_grow_over_a_long_session(char_model_path, speech):
    """Ten minutes of audio through one session: what a step works on stays the same size
    (encoder caches, feature buffer, open utterance), so its cost cannot grow with the session.
    How long steps take is measured by the benchmark, not here."""
    from asr_stream.recognizers.nemo_cache_aware import CacheAwareCtcRecognizer
    from asr_stream.recognizers.nemo_model import load_nemo_model

    recognizer = CacheAwareCtcRecognizer(load_nemo_model(str(char_model_path)))
    initial = [tuple(c.shape) for c in recognizer.steps.caches]
    audio = np.tile(speech, int(np.ceil(600 * 16000 / len(speech))))[:600 * 16000]
    largest_feats = largest_open = 0
    finals = 0
    for i in range(0, len(audio), 16000):
        recognizer.accept_waveform(audio[i:i + 16000])
        finals += sum(h.final for h in recognizer.decode())
        largest_feats = max(largest_feats, recognizer.feats.shape[1])
        largest_open = max(largest_open, len(recognizer.transcript.tokens))
    assert [tuple(c.shape) for c in recognizer.steps.caches] == initial
    assert recognizer.transcript.frames >= 600 / recognizer.frame_s - 2  # every frame of ten minutes was decoded
    assert largest_feats < 16000 // 160 + 64  # the feature buffer holds one block plus a chunk, never the session
    assert finals > 20 and largest_open < 2000  # utterances close, so the open one stays short


def test_lookahead_must_be_one_the_model_has(char_model_path):
    from asr_stream.recognizers.nemo_cache_aware import CacheAwareCtcRecognizer
    from asr_stream.recognizers.nemo_model import load_nemo_model

    with pytest.raises(UserError, match="supports 0, 80 ms"):
        CacheAwareCtcRecognizer(load_nemo_model(str(char_model_path)), lookahead_ms=480)


def test_korean_sentencepiece_vocabulary_decodes_to_unicode_words(tmp_path):
    """A BPE model whose tokenizer was trained here on Korean text: token ids become the right
    Hangul words, split where SentencePiece marks word starts."""
    import sentencepiece as spm

    from asr_stream.recognizers.nemo_cache_aware import CacheAwareCtcRecognizer
    from asr_stream.recognizers.nemo_model import load_nemo_model

    sentences = ["안녕하세요 반갑습니다", "오늘 날씨가 정말 좋네요", "음성 인식 시스템을 시험합니다",
                 "카페에서 커피를 마셔요", "시장은 사람들로 붐빕니다", "회의는 세 시에 시작합니다"] * 20
    corpus = tmp_path / "ko.txt"
    corpus.write_text("\n".join(sentences), encoding="utf-8")
    tok_dir = tmp_path / "tokenizer"
    tok_dir.mkdir()
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tok_dir / "tokenizer"), vocab_size=60,
                                   model_type="bpe", character_coverage=1.0)
    processor = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    (tok_dir / "vocab.txt").write_text("\n".join(pieces), encoding="utf-8")
    torch.manual_seed(0)
    model = nemo_models.EncDecCTCModelBPE(cfg=tiny_config(pieces, str(tok_dir))).eval()
    path = tmp_path / "ko.nemo"
    model.save_to(str(path))
    recognizer = CacheAwareCtcRecognizer(load_nemo_model(str(path)))
    sentence = "오늘 날씨가 정말 좋네요"
    ids = processor.encode(sentence)
    words = recognizer.transcript.vocabulary.words([(token, frame) for frame, token in enumerate(ids)],
                                                   recognizer.frame_s)
    assert [w.text for w in words] == sentence.split()
    assert all(a.end <= b.start for a, b in zip(words, words[1:]))


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_text("not a model"), "not a .nemo file"),
    (lambda p: _tar_without_config(p), "no model_config.yaml"),
])
def test_bad_model_files_are_one_line_errors(tmp_path, make, needle):
    bad = tmp_path / "bad.nemo"
    make(bad)
    wav, _ = demo_clip()
    proc = run_cli("--audio_path", str(wav), "--denoiser", "none", "--asr", "nemo", "--model", str(bad))
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2, err
    assert needle in err[-1] and not any("Traceback" in line for line in err), err


def _tar_without_config(path):
    member = path.parent / "weights.ckpt"
    member.write_bytes(b"\0" * 64)
    with tarfile.open(path, "w") as tar:
        tar.add(member, arcname="model_weights.ckpt")


def test_missing_model_is_a_one_line_error():
    wav, _ = demo_clip()
    proc = run_cli("--audio_path", str(wav), "--denoiser", "none", "--asr", "nemo", "--model", "/nope/x.nemo")
    assert proc.returncode == 2 and "does not exist" in proc.stderr.decode()


def test_a_model_without_a_ctc_head_is_a_one_line_error(tmp_path):
    """A pure RNN-T model (no CTC decoder) is refused by name, not run."""
    cfg = tiny_config(CHARS)
    del cfg["decoder"]
    cfg.model_defaults = {"enc_hidden": 64, "pred_hidden": 32}
    cfg.decoder = {"_target_": "nemo.collections.asr.modules.RNNTDecoder", "vocab_size": len(CHARS),
                   "prednet": {"pred_hidden": 32, "pred_rnn_layers": 1}}
    cfg.joint = {"_target_": "nemo.collections.asr.modules.RNNTJoint", "num_classes": len(CHARS),
                 "vocabulary": CHARS, "jointnet": {"joint_hidden": 32, "activation": "relu",
                                                   "encoder_hidden": 64, "pred_hidden": 32}}
    cfg.decoding = {"strategy": "greedy_batch", "greedy": {"max_symbols": 5}}
    path = tmp_path / "rnnt.nemo"
    nemo_models.EncDecRNNTModel(cfg=cfg).save_to(str(path))
    wav, _ = demo_clip()
    proc = run_cli("--audio_path", str(wav), "--denoiser", "none", "--asr", "nemo", "--model", str(path))
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2, err
    assert "EncDecRNNTModel has no CTC head" in err[-1] and not any("Traceback" in line for line in err), err
