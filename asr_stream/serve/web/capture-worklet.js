// Microphone capture for the caption page: the AudioWorklet's 128-sample render quanta,
// gathered into 100 ms blocks of 16-bit PCM and handed to the page with the block's peak level.
class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.round(sampleRate / 10);
    this.block = new Int16Array(this.size);
    this.filled = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]));
      this.peak = Math.max(this.peak, Math.abs(s));
      this.block[this.filled++] = s < 0 ? s * 32768 : s * 32767;
      if (this.filled === this.block.length) {
        this.port.postMessage({ pcm: this.block.buffer, peak: this.peak }, [this.block.buffer]);
        this.block = new Int16Array(this.size);  // the old one went to the page with its buffer
        this.filled = 0;
        this.peak = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
