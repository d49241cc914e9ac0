// A voice call with the avatar over WebRTC (the wire protocol: realtime_avatar/rtc/protocol.py).
//
// The microphone goes up as one audio track; the avatar's voice and face come down as one audio and one
// video track; captions, states and the reply's text arrive as JSON on the "events" data channel. No
// trickle ICE: the offer leaves once the browser has gathered its candidates, and the answer carries
// the runtime's.

import { ApiError, hangUp, rtcConfig, sendOffer } from './api'
import type { Lang } from './i18n'

export type CallEvent =
  | { type: 'call_started'; call_id: string; session_id: string; language: string }
  | { type: 'listening' } | { type: 'user_speaking' } | { type: 'idle' }
  | { type: 'transcript'; text: string; language: string; final: boolean; turn: number }
  | { type: 'thinking'; turn: number }
  | { type: 'reply_text'; delta: string; turn: number }
  | { type: 'speaking'; turn: number; text: string }
  | { type: 'reply_done'; turn: number; text: string; cut: boolean }
  | { type: 'interrupted'; turn: number }
  | { type: 'turn_timings'; turn: number; timings_ms: Record<string, number> }
  | { type: 'error'; error: { code: string; message: string } }
  | { type: 'call_ended'; reason: string }

export interface CallHandlers {
  onEvent: (event: CallEvent) => void
  onMedia: (stream: MediaStream) => void // the avatar's tracks (called again as each one arrives)
  onConnected: () => void
  onFailed: (error: ApiError) => void // the connection broke after the call had started
}

const GATHER_TIMEOUT_MS = 4000 // a STUN server that never answers: offer the candidates found by then
// No connection by then counts as ICE failing (the page then tries the WebSocket fallback); ?ice_timeout_s=
// shortens it (tests).
const CONNECT_TIMEOUT_MS = 1000 * (Number(new URLSearchParams(window.location.search).get('ice_timeout_s')) || 20)
const DISCONNECT_GRACE_MS = 5000 // "disconnected" often recovers (a Wi-Fi hiccup); "failed" does not

// For tests and debugging (the browser test reads getStats() from it): the page's current or last call,
// with the events it received (the last few hundred).
interface CallDebug { pc: RTCPeerConnection; callId: string | null; events: CallEvent[] }
const DEBUG_EVENTS = 500
declare global { interface Window { __avatarCall?: CallDebug } }

function micError(error: unknown): ApiError {
  const name = error instanceof DOMException ? error.name : ''
  const message = error instanceof Error ? error.message : String(error)
  if (name === 'NotAllowedError' || name === 'SecurityError') return new ApiError(0, 'mic_denied', message)
  if (name === 'NotFoundError' || name === 'OverconstrainedError') return new ApiError(0, 'no_mic', message)
  if (name === 'NotReadableError' || name === 'AbortError') return new ApiError(0, 'mic_busy', message)
  return new ApiError(0, 'mic_error', message)
}

function gathered(pc: RTCPeerConnection): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve()
  return new Promise((resolve) => {
    const done = (): void => {
      window.clearTimeout(timer)
      pc.removeEventListener('icegatheringstatechange', check)
      resolve()
    }
    const check = (): void => { if (pc.iceGatheringState === 'complete') done() }
    const timer = window.setTimeout(done, GATHER_TIMEOUT_MS)
    pc.addEventListener('icegatheringstatechange', check)
  })
}

function parseEvent(data: unknown): CallEvent | null {
  if (typeof data !== 'string') return null
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

export class Call {
  readonly pc: RTCPeerConnection
  private readonly channel: RTCDataChannel
  private readonly mic: MediaStream
  private readonly token: () => string
  private readonly handlers: CallHandlers
  private readonly debug: CallDebug
  private readonly remote = new MediaStream()
  private callId: string | null = null
  private closed = false
  private connected = false
  private connectTimer: number | undefined
  private graceTimer: number | undefined

  private constructor(mic: MediaStream, ice: RTCConfiguration, token: () => string, handlers: CallHandlers) {
    this.mic = mic
    this.token = token
    this.handlers = handlers
    this.pc = new RTCPeerConnection(ice)
    this.debug = { pc: this.pc, callId: null, events: [] }
    window.__avatarCall = this.debug
    for (const track of mic.getAudioTracks()) this.pc.addTrack(track, mic)
    this.pc.addTransceiver('video', { direction: 'recvonly' })
    // Created before the offer, so the offer carries the data channel's m-line.
    this.channel = this.pc.createDataChannel('events', { ordered: true })
    this.channel.addEventListener('message', (e: MessageEvent) => {
      const event = parseEvent(e.data)
      if (!event || this.closed) return
      this.debug.events.push(event)
      if (this.debug.events.length > DEBUG_EVENTS) this.debug.events.shift()
      handlers.onEvent(event)
    })
    this.channel.addEventListener('close', () => { this.lost('connection_lost', 'the call’s event channel closed') })
    this.pc.addEventListener('track', (e: RTCTrackEvent) => {
      this.remote.addTrack(e.track)
      handlers.onMedia(this.remote)
    })
    this.pc.addEventListener('connectionstatechange', () => { this.onState() })
  }

  /** Asks for the microphone, then calls. Rejects with an ApiError whose code says what went wrong
   * (``mic_denied``, ``no_mic``, ``webrtc_unsupported``, the service's or runtime's own codes...). */
  static async start(token: () => string, language: Lang, handlers: CallHandlers, signal: AbortSignal): Promise<Call> {
    if (typeof RTCPeerConnection === 'undefined') {
      throw new ApiError(0, 'webrtc_unsupported', 'RTCPeerConnection is not available')
    }
    const devices = navigator.mediaDevices as MediaDevices | undefined // absent outside a secure context
    if (!devices?.getUserMedia) throw new ApiError(0, 'mic_unavailable', 'navigator.mediaDevices is not available')
    const config = rtcConfig(token(), signal)
    config.catch(() => undefined) // awaited below; a refusal there must not count as unhandled meanwhile
    let mic: MediaStream
    try {
      mic = await devices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true }, video: false,
      })
    } catch (error) {
      throw micError(error)
    }
    if (signal.aborted) {
      for (const track of mic.getTracks()) track.stop()
      signal.throwIfAborted()
    }
    let call: Call | null = null
    try {
      const { iceServers, iceTransportPolicy } = await config
      call = new Call(mic, { iceServers, iceTransportPolicy }, token, handlers)
      await call.offer(language, signal)
      return call
    } catch (error) {
      if (call) call.hangup()
      else for (const track of mic.getTracks()) track.stop()
      if (error instanceof ApiError || signal.aborted) throw error
      // The browser refused a step (an answer it cannot take, a codec it lacks): a call that cannot start.
      throw new ApiError(0, 'call_failed', error instanceof Error ? error.message : String(error))
    }
  }

  private async offer(language: Lang, signal: AbortSignal): Promise<void> {
    await this.pc.setLocalDescription(await this.pc.createOffer())
    await gathered(this.pc)
    signal.throwIfAborted()
    const local = this.pc.localDescription
    if (!local) throw new ApiError(0, 'webrtc_unsupported', 'no local description')
    const answer = await sendOffer(this.token(), local.sdp, language, signal)
    this.callId = answer.callId
    this.debug.callId = answer.callId
    signal.throwIfAborted() // hung up while the runtime answered: hangup() (the caller's) ends it there
    await this.pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp })
    this.connectTimer = window.setTimeout(() => {
      if (this.pc.connectionState !== 'connected') {
        this.lost('ice_failed', `no connection after ${CONNECT_TIMEOUT_MS / 1000} s`)
      }
    }, CONNECT_TIMEOUT_MS)
  }

  private onState(): void {
    const state = this.pc.connectionState
    if (state === 'connected') {
      this.connected = true
      window.clearTimeout(this.connectTimer)
      window.clearTimeout(this.graceTimer)
      this.handlers.onConnected()
    } else if (state === 'failed') {
      this.lost(this.connected ? 'connection_lost' : 'ice_failed', 'the connection failed')
    } else if (state === 'disconnected') {
      window.clearTimeout(this.graceTimer)
      this.graceTimer = window.setTimeout(() => {
        if (this.pc.connectionState === 'disconnected') this.lost('connection_lost', 'connection disconnected')
      }, DISCONNECT_GRACE_MS)
    }
  }

  private lost(code: string, message: string): void {
    if (this.closed) return
    this.hangup()
    this.handlers.onFailed(new ApiError(0, code, message))
  }

  get id(): string | null {
    return this.callId
  }

  /** A typed message inside the call; false if the channel is not open (the caller says so). */
  sendText(text: string, language: Lang): boolean {
    return this.send({ type: 'text', text, language })
  }

  /** Cuts the reply in flight (the stop button). */
  stopReply(): boolean {
    return this.send({ type: 'stop' })
  }

  private send(message: Record<string, unknown>): boolean {
    if (this.closed || this.channel.readyState !== 'open') return false
    this.channel.send(JSON.stringify(message))
    return true
  }

  /** Ends the call here and on the runtime (idempotent). */
  hangup(): void {
    if (this.closed) return
    this.send({ type: 'hangup' })
    this.closed = true
    window.clearTimeout(this.connectTimer)
    window.clearTimeout(this.graceTimer)
    for (const track of this.mic.getTracks()) track.stop()
    this.pc.close()
    if (this.callId) void hangUp(this.token(), this.callId)
  }
}
