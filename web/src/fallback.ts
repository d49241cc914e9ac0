// A voice call over one WebSocket, for networks where WebRTC cannot connect (the framing:
// realtime_avatar/rtc/wire.py; the events are the data channel's, realtime_avatar/rtc/protocol.py).
//
// The microphone goes up as 20 ms frames of 16-bit PCM from an AudioWorklet (public/mic-worklet.js).
// The avatar's audio comes down as 20 ms PCM packets and its face as JPEG frames, both stamped with their
// position on the call's one clock (48 kHz samples): the audio is scheduled in WebAudio on its positions
// behind a small jitter buffer, and each frame is drawn on the canvas when the audio clock reaches its
// position, so lips stay on the voice whatever the network does. The first message is the session token
// (a browser cannot put headers on a WebSocket, and a URL would be logged).

import { ApiError } from './api'
import type { CallEvent, CallHandlers } from './call'
import type { Lang } from './i18n'

const RATE = 48000
const MIC = 0x01
const AUDIO = 0x11
const VIDEO = 0x12
const JITTER_S = 0.15 // audio is scheduled this far behind its first packet's arrival
const LATE_S = 0.02 // a packet due sooner than this moves the whole schedule later (audio and video)
const MAX_FRAMES = 50 // decoded frames waiting for their time (2 s at 25 fps)
const OPEN_TIMEOUT_MS = 20000
const DEBUG_EVENTS = 500

export interface FallbackHandlers extends Omit<CallHandlers, 'onMedia'> {
  canvas: HTMLCanvasElement
}

// For tests and debugging, like the WebRTC call's (window.__avatarCall): what the fallback received.
export interface FallbackDebug {
  transport: 'websocket'
  callId: string | null
  events: CallEvent[]
  audioPackets: number
  audioEnergy: number // the sum over packets of their mean square: grows while the avatar speaks
  framesDecoded: number
  framesDrawn: number
  rebuffers: number
  micFrames: number
}

function socketUrl(): string {
  const url = new URL(`${import.meta.env.BASE_URL}api/rtc/ws`, window.location.href)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  return url.toString()
}

function parseEvent(data: string): CallEvent | null {
  try {
    const value = JSON.parse(data) as unknown
    if (typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string') {
      return value as CallEvent
    }
  } catch {
    // not JSON: ignored, as the protocol says
  }
  return null
}

interface Frame { position: number; image: ImageBitmap }

export class FallbackCall {
  readonly transport = 'websocket'
  private readonly socket: WebSocket
  private readonly mic: MediaStream
  private readonly handlers: FallbackHandlers
  private readonly audio: AudioContext
  private readonly debug: FallbackDebug
  private readonly frames: Frame[] = []
  private readonly playing = new Set<AudioBufferSourceNode>()
  private worklet: AudioWorkletNode | null = null
  private source: MediaStreamAudioSourceNode | null = null
  private base: number | null = null // AudioContext time of call sample 0
  private raf = 0
  private callId: string | null = null
  private closed = false

  private constructor(mic: MediaStream, socket: WebSocket, audio: AudioContext, handlers: FallbackHandlers) {
    this.mic = mic
    this.socket = socket
    this.audio = audio
    this.handlers = handlers
    this.debug = { transport: 'websocket', callId: null, events: [], audioPackets: 0, audioEnergy: 0, framesDecoded: 0,
      framesDrawn: 0, rebuffers: 0, micFrames: 0 }
    ;(window as unknown as { __avatarCall?: FallbackDebug }).__avatarCall = this.debug
  }

  /** Asks for the microphone, then calls over the WebSocket. Rejects with an ApiError (``mic_denied``,
   * ``websocket_failed``, or the service's or runtime's own codes: ``session_not_found``, ``too_many_calls``...). */
  static async start(token: () => string, language: Lang, handlers: FallbackHandlers,
    signal: AbortSignal): Promise<FallbackCall> {
    const devices = navigator.mediaDevices as MediaDevices | undefined
    if (!devices?.getUserMedia) throw new ApiError(0, 'mic_unavailable', 'navigator.mediaDevices is not available')
    let mic: MediaStream
    try {
      mic = await devices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true }, video: false,
      })
    } catch (error) {
      const name = error instanceof DOMException ? error.name : ''
      const message = error instanceof Error ? error.message : String(error)
      throw new ApiError(0, name === 'NotAllowedError' ? 'mic_denied' : 'mic_error', message)
    }
    const audio = new AudioContext({ sampleRate: RATE, latencyHint: 'interactive' })
    const socket = new WebSocket(socketUrl())
    socket.binaryType = 'arraybuffer'
    const call = new FallbackCall(mic, socket, audio, handlers)
    try {
      await call.open(token(), language, signal)
      await call.startMic()
      return call
    } catch (error) {
      call.hangup()
      if (error instanceof ApiError || signal.aborted) throw error
      throw new ApiError(0, 'call_failed', error instanceof Error ? error.message : String(error))
    }
  }

  private open(token: string, language: Lang, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      let started = false
      let refusal: ApiError | null = null
      const timer = window.setTimeout(() => {
        reject(new ApiError(0, 'websocket_failed', 'the fallback connection did not open'))
      }, OPEN_TIMEOUT_MS)
      signal.addEventListener('abort', () => {
        window.clearTimeout(timer)
        reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
      }, { once: true })
      this.socket.addEventListener('open', () => {
        this.socket.send(JSON.stringify({ type: 'start', token, language }))
      })
      this.socket.addEventListener('message', (e: MessageEvent) => {
        if (typeof e.data === 'string') {
          const event = parseEvent(e.data)
          if (!event) return
          if (!started && event.type === 'error') {
            refusal = new ApiError(0, event.error.code, event.error.message)
            return
          }
          if (!started && event.type === 'call_started') {
            started = true
            this.callId = event.call_id
            this.debug.callId = event.call_id
            window.clearTimeout(timer)
            resolve()
            this.handlers.onConnected()
          }
          this.onEvent(event)
        } else if (e.data instanceof ArrayBuffer) {
          this.onMedia(e.data)
        }
      })
      this.socket.addEventListener('close', (e: CloseEvent) => {
        window.clearTimeout(timer)
        if (!started) {
          // 4000 + the HTTP status of the refusal (4404 session_not_found, 4503 too_many_calls...).
          const status = e.code >= 4400 && e.code < 4600 ? e.code - 4000 : 0
          reject(refusal ? new ApiError(status, refusal.code, refusal.message)
            : new ApiError(status, e.reason || 'websocket_failed', 'the fallback connection closed'))
          return
        }
        if (!this.closed) {
          this.stop()
          // A call that ended on the runtime said so (call_ended); anything else is a lost connection.
          if (!this.debug.events.some((ev) => ev.type === 'call_ended')) {
            this.handlers.onFailed(new ApiError(0, 'connection_lost', `the fallback connection closed (${e.code})`))
          }
        }
      })
    })
  }

  private async startMic(): Promise<void> {
    if (this.audio.state === 'suspended') await this.audio.resume()
    await this.audio.audioWorklet.addModule(`${import.meta.env.BASE_URL}mic-worklet.js`)
    if (this.closed) return
    this.source = this.audio.createMediaStreamSource(this.mic)
    this.worklet = new AudioWorkletNode(this.audio, 'mic-frames')
    this.worklet.port.onmessage = (e: MessageEvent<ArrayBuffer>) => { this.sendMic(e.data) }
    this.source.connect(this.worklet) // not to the speakers: the worklet outputs nothing
    this.raf = window.requestAnimationFrame(() => { this.draw() })
  }

  private sendMic(pcm: ArrayBuffer): void {
    if (this.closed || this.socket.readyState !== WebSocket.OPEN) return
    const frame = new Uint8Array(5 + pcm.byteLength)
    const view = new DataView(frame.buffer)
    view.setUint8(0, MIC)
    view.setUint32(1, this.audio.sampleRate, true)
    frame.set(new Uint8Array(pcm), 5)
    this.socket.send(frame)
    this.debug.micFrames += 1
  }

  private onEvent(event: CallEvent): void {
    if (this.closed) return
    this.debug.events.push(event)
    if (this.debug.events.length > DEBUG_EVENTS) this.debug.events.shift()
    if (event.type === 'interrupted') this.flush()
    this.handlers.onEvent(event)
  }

  private onMedia(data: ArrayBuffer): void {
    if (this.closed || data.byteLength < 9) return
    const view = new DataView(data)
    const kind = view.getUint8(0)
    const position = Number(view.getBigUint64(1, true))
    if (kind === AUDIO) this.play(position, new Int16Array(data.slice(9)))
    else if (kind === VIDEO) this.decode(position, data.slice(9))
  }

  /** The AudioContext time of a call sample: the first packet sets it, a late one moves it later. */
  private timeOf(position: number): number {
    const now = this.audio.currentTime
    if (this.base === null) this.base = now + JITTER_S - position / RATE
    const at = this.base + position / RATE
    if (at < now + LATE_S) { // the network or the tab stalled: play on from here, a little later
      this.base += now + JITTER_S - at
      this.debug.rebuffers += 1
    }
    return this.base + position / RATE
  }

  private play(position: number, pcm: Int16Array): void {
    const buffer = this.audio.createBuffer(1, pcm.length, RATE)
    const channel = buffer.getChannelData(0)
    let energy = 0
    for (let i = 0; i < pcm.length; i++) {
      const v = (pcm[i] ?? 0) / 32768
      channel[i] = v
      energy += v * v
    }
    this.debug.audioEnergy += energy / Math.max(1, pcm.length)
    const node = this.audio.createBufferSource()
    node.buffer = buffer
    node.connect(this.audio.destination)
    node.start(this.timeOf(position))
    this.playing.add(node)
    node.onended = () => { this.playing.delete(node) }
    this.debug.audioPackets += 1
  }

  private decode(position: number, jpeg: ArrayBuffer): void {
    void createImageBitmap(new Blob([jpeg], { type: 'image/jpeg' })).then((image) => {
      if (this.closed) { image.close(); return }
      this.frames.push({ position, image })
      this.debug.framesDecoded += 1
      while (this.frames.length > MAX_FRAMES) this.frames.shift()?.image.close()
    }, () => undefined)
  }

  /** Each animation frame: the latest decoded frame whose time the audio clock has reached. */
  private draw(): void {
    if (this.closed) return
    const heard = this.base === null ? -1 : (this.audio.currentTime - this.base) * RATE // call samples
    let show: Frame | undefined
    while (this.frames.length && (this.frames[0]?.position ?? Infinity) <= heard) {
      show?.image.close()
      show = this.frames.shift()
    }
    if (show) {
      const canvas = this.handlers.canvas
      if (canvas.width !== show.image.width) canvas.width = show.image.width
      if (canvas.height !== show.image.height) canvas.height = show.image.height
      canvas.getContext('2d')?.drawImage(show.image, 0, 0)
      canvas.dataset.active = 'true'
      show.image.close()
      this.debug.framesDrawn += 1
    }
    this.raf = window.requestAnimationFrame(() => { this.draw() })
  }

  /** A barge-in: what is scheduled but not yet heard would play over the user. */
  private flush(): void {
    for (const node of this.playing) node.stop()
    this.playing.clear()
  }

  get id(): string | null {
    return this.callId
  }

  sendText(text: string, language: Lang): boolean {
    return this.send({ type: 'text', text, language })
  }

  stopReply(): boolean {
    return this.send({ type: 'stop' })
  }

  private send(message: Record<string, unknown>): boolean {
    if (this.closed || this.socket.readyState !== WebSocket.OPEN) return false
    this.socket.send(JSON.stringify(message))
    return true
  }

  private stop(): void {
    this.closed = true
    window.cancelAnimationFrame(this.raf)
    for (const track of this.mic.getTracks()) track.stop()
    this.source?.disconnect()
    this.worklet?.disconnect()
    for (const frame of this.frames.splice(0)) frame.image.close()
    void this.audio.close().catch(() => undefined)
  }

  /** Ends the call here and on the runtime (idempotent): the hang-up message, then the socket closes. */
  hangup(): void {
    if (this.closed) return
    this.send({ type: 'hangup' })
    this.stop()
    if (this.socket.readyState === WebSocket.CONNECTING || this.socket.readyState === WebSocket.OPEN) {
      this.socket.close(1000, 'hangup')
    }
  }
}
