// The signaling service's API (signaling/README.md): sessions with short-lived tokens, and the runtime's
// NDJSON chat events relayed as they are written.

import type { Lang } from './i18n'

const API = `${import.meta.env.BASE_URL}api`

export class ApiError extends Error {
  readonly status: number
  readonly code: string
  readonly retryAfterS: number | undefined

  constructor(status: number, code: string, message: string, retryAfterS?: number) {
    super(message)
    this.status = status
    this.code = code
    this.retryAfterS = retryAfterS
  }
}

export interface Session {
  token: string
  tokenExpiresInS: number
  sessionId: string
  language: Lang // the reply language, fixed for the conversation ("auto": each message's own)
  greeting: string
}

export interface StartEvent { type: 'start'; session_id: string; turn: number; language: string }
export interface TextEvent { type: 'text'; delta: string }
export interface ClipEvent {
  type: 'clip'; index: number; text: string; language: string
  start_s: number; duration_s: number; mime: string; data: string
}
export interface DoneEvent { type: 'done'; text: string; clips: number; cut: boolean }
export interface CancelledEvent { type: 'cancelled'; reason: string }
export interface ErrorEvent { type: 'error'; error: { code: string; message: string } }
export type ChatEvent = StartEvent | TextEvent | ClipEvent | DoneEvent | CancelledEvent | ErrorEvent

interface ErrorBody { error?: { code?: string; message?: string } }

async function errorFrom(response: Response): Promise<ApiError> {
  let code = `http_${response.status}`
  let message = response.statusText || 'request failed'
  try {
    const body = (await response.json()) as ErrorBody
    code = body.error?.code ?? code
    message = body.error?.message ?? message
  } catch {
    // not JSON (a proxy's page): keep the status
  }
  const retry = Number(response.headers.get('Retry-After'))
  return new ApiError(response.status, code, message, retry > 0 ? retry : undefined)
}

async function request(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init)
  } catch (error) {
    if (init.signal?.aborted) throw error
    throw new ApiError(0, 'network_error', String(error))
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => {
      clearTimeout(timer)
      reject(signal.reason as Error)
    }, { once: true })
  })
}

interface WakingBody { state: 'waking'; waited_s: number; timeout_s: number }
interface SessionBody { token: string; token_expires_in_s: number; session_id: string; greeting: string }

/** A new conversation replying in ``language``. While the runtime wakes up (202), reports the seconds so
 * far and asks again. */
export async function createSession(
  language: Lang, onWaking: (waitedS: number) => void, signal: AbortSignal,
): Promise<Session> {
  for (;;) {
    const response = await request(`${API}/session`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ language }), signal,
    })
    if (response.status === 202) {
      const progress = (await response.json()) as WakingBody
      onWaking(progress.waited_s)
      await sleep(1000 * (Number(response.headers.get('Retry-After')) || 1), signal)
      continue
    }
    if (!response.ok) throw await errorFrom(response)
    const body = (await response.json()) as SessionBody
    return {
      token: body.token, tokenExpiresInS: body.token_expires_in_s,
      sessionId: body.session_id, language, greeting: body.greeting,
    }
  }
}

export async function refreshToken(token: string): Promise<{ token: string; tokenExpiresInS: number }> {
  const response = await request(`${API}/session/refresh`, {
    method: 'POST', headers: { Authorization: `Bearer ${token}` },
  })
  if (!response.ok) throw await errorFrom(response)
  const body = (await response.json()) as { token: string; token_expires_in_s: number }
  return { token: body.token, tokenExpiresInS: body.token_expires_in_s }
}

/** Ends the conversation; survives the page closing (keepalive), so its slot frees at once. */
export async function endSession(token: string): Promise<void> {
  try {
    await fetch(`${API}/session`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` }, keepalive: true })
  } catch {
    // gone already, or offline: the service ends it when it idles out
  }
}

async function* readEvents(response: Response): AsyncGenerator<ChatEvent> {
  if (!response.body) throw new ApiError(response.status, 'reply_cut', 'the reply has no body')
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buffer += value
      let newline: number
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).trim()
        buffer = buffer.slice(newline + 1)
        if (line) yield JSON.parse(line) as ChatEvent
      }
    }
    if (buffer.trim()) yield JSON.parse(buffer) as ChatEvent
  } finally {
    reader.releaseLock()
  }
}

/** The events of one reply. Aborting ``signal`` (stop, or a newer message) cancels it on the server. */
export async function* chat(token: string, text: string, language: Lang, signal: AbortSignal): AsyncGenerator<ChatEvent> {
  const response = await request(`${API}/chat`, {
    method: 'POST', signal,
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify({ text, language }),
  })
  if (!response.ok) throw await errorFrom(response)
  yield* readEvents(response)
}

export async function* greeting(token: string, signal: AbortSignal): AsyncGenerator<ChatEvent> {
  const response = await request(`${API}/greeting`, { headers: { Authorization: `Bearer ${token}` }, signal })
  if (!response.ok) throw await errorFrom(response)
  yield* readEvents(response)
}

// --- voice calls: WebRTC signalling through the service (realtime_avatar/rtc/protocol.py) -------------------

export interface IceServer { urls: string | string[]; username?: string; credential?: string }
export interface RtcConfig { iceServers: IceServer[]; iceTransportPolicy: RTCIceTransportPolicy; maxCalls: number }
export interface Answer { callId: string; sdp: string; language: string }

export async function rtcConfig(token: string, signal: AbortSignal): Promise<RtcConfig> {
  const response = await request(`${API}/rtc/config`, { headers: { Authorization: `Bearer ${token}` }, signal })
  if (!response.ok) throw await errorFrom(response)
  const body = (await response.json()) as { ice_servers?: IceServer[]; ice_transport_policy?: string; max_calls?: number }
  // "relay": only TURN-relayed candidates (the relay's credential, minted for this conversation, is in iceServers).
  const iceTransportPolicy = body.ice_transport_policy === 'relay' ? 'relay' : 'all'
  return { iceServers: body.ice_servers ?? [], iceTransportPolicy, maxCalls: body.max_calls ?? 0 }
}

/** The browser's offer (every ICE candidate in it) for the runtime's answer. */
export async function sendOffer(token: string, sdp: string, language: Lang, signal: AbortSignal): Promise<Answer> {
  const response = await request(`${API}/rtc/offer`, {
    method: 'POST', signal,
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify({ sdp, type: 'offer', language }),
  })
  if (!response.ok) throw await errorFrom(response)
  const body = (await response.json()) as { call_id: string; sdp: string; language: string }
  return { callId: body.call_id, sdp: body.sdp, language: body.language }
}

/** Hangs up on the runtime; survives the page closing (keepalive). Errors are moot: the call is over here. */
export async function hangUp(token: string, callId: string): Promise<void> {
  try {
    await fetch(`${API}/rtc/call/${encodeURIComponent(callId)}`, {
      method: 'DELETE', headers: { Authorization: `Bearer ${token}` }, keepalive: true,
    })
  } catch {
    // offline or gone: the runtime notices the peer connection closing anyway
  }
}
