#!/usr/bin/env python
"""Each file its own stream against the same Whisper tiny.en offline (diagnostic for issue 20;
not yet part of `make bench`): WER, insertions, deletions, substitutions per 100 words.

    python bench/streamed_vs_offline.py DATASET [--limit N] [--phrases] [--show]

DATASET is an `asr-stream eval` dataset name (ljspeech, valentini, an4, librispeech-unlabeled,
...) or valentini-clean; --phrases first cuts each clip into one-to-five-word phrases with
0.4-1.2 s pauses; --show prints every file whose streamed text differs from offline.
"""
import sys, json, time, argparse
from pathlib import Path
import numpy as np, jiwer
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'tests')]
from conftest import load_16k, normalize
from asr_stream.evaluation.manifest import dataset
from asr_stream.recognizers.whisper import load_decoder, WhisperStreamingRecognizer, bundled_model_path
from faster_whisper import WhisperModel

p = argparse.ArgumentParser()
p.add_argument('ds'); p.add_argument('--limit', type=int); p.add_argument('--phrases', action='store_true')
p.add_argument('--show', action='store_true'); p.add_argument('--out')
a = p.parse_args()
us = dataset('valentini' if a.ds=='valentini-clean' else a.ds)
if a.limit: us = us[:a.limit]
dec = load_decoder(None, threads=1)
off = WhisperModel(bundled_model_path(), device='cpu', compute_type='int8', cpu_threads=1)
def offline(x, words=False):
    segs, _ = off.transcribe(x, language='en', beam_size=1, vad_filter=False, condition_on_previous_text=False, word_timestamps=words)
    segs = list(segs)
    return " ".join(s.text for s in segs), segs
def phrases(x):
    _, segs = offline(x, True)
    ws = [w for s in segs for w in s.words]
    rng = np.random.default_rng(len(x))
    parts=[np.zeros(int(0.3*16000),np.float32)]; last=0; count=0
    lim = rng.integers(1,6)
    for i,w in enumerate(ws[:-1]):
        count+=1
        gap = ws[i+1].start - w.end
        if count>=lim and gap>0.05:
            cut=int((w.end+ws[i+1].start)/2*16000)
            parts += [x[last:cut], np.zeros(int(rng.uniform(0.4,1.2)*16000),np.float32)]
            last=cut; count=0; lim=rng.integers(1,6)
    parts.append(x[last:])
    return np.concatenate(parts)
rec = WhisperStreamingRecognizer(decoder=dec, backlog_s=None)
R=[];O=[];S=[]; t_stream=0
for u in us:
    x = load_16k(u.clean if (a.ds=='valentini-clean') else u.audio)
    if a.phrases: x = phrases(x)
    o,_ = offline(x)
    t0=time.time()
    rec.reset(); hyps=[]
    for i in range(0,len(x),1600):
        rec.accept_waveform(x[i:i+1600]); hyps+=rec.decode()
    hyps+=rec.finish(); t_stream+=time.time()-t0
    s=" ".join(h.text for h in hyps if h.final)
    ref = u.text if u.text else o
    R.append(normalize(ref)); O.append(normalize(o) or '<e>'); S.append(normalize(s) or '<e>')
    if a.show and S[-1]!=O[-1]:
        print('--', u.key, '\n  REF', R[-1], '\n  OFF', O[-1], '\n  STR', S[-1])
def sc(r,h):
    m=jiwer.process_words(r,h); n=sum(len(x.split()) for x in r)
    return f"WER {100*m.wer:5.1f} ins {100*m.insertions/n:4.1f} del {100*m.deletions/n:4.1f} sub {100*m.substitutions/n:4.1f}"
print(a.ds, 'phr' if a.phrases else '', len(us), 'files')
print(' offline ', sc(R,O)); print(' stream  ', sc(R,S)); print(' str-vs-off', sc(O,S), f' stream time {t_stream:.0f}s')
if a.out: json.dump({'R':R,'O':O,'S':S}, open(a.out,'w'))
