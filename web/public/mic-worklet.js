// The microphone for a call over the WebSocket fallback (web/src/fallback.ts): 20 ms of 16-bit PCM at the
// context's rate per message to the page, which sends each as one frame (realtime_avatar/rtc/wire.py).
class MicFrames extends AudioWorkletProcessor {
  constructor() {
    super()
    this.size = Math.round(sampleRate / 50)
    this.buffer = new Int16Array(this.size)
    this.filled = 0
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0]
    if (!channel) return true
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]))
      this.buffer[this.filled++] = s < 0 ? s * 32768 : s * 32767
      if (this.filled === this.size) {
        this.port.postMessage(this.buffer.buffer, [this.buffer.buffer])
        this.buffer = new Int16Array(this.size)
        this.filled = 0
      }
    }
    return true
  }
}

registerProcessor('mic-frames', MicFrames)
