import { useCallback, useEffect, useMemo, useRef, useState } from 'react'

import { ApiError, chat, createSession, endSession, greeting, refreshToken, type ChatEvent, type Session } from './api'
import { Call, type CallEvent } from './call'
import { FallbackCall } from './fallback'
import { browserLang, hasKey, translator, type Lang, type StringKey } from './i18n'
import { FaceIcon, GlobeIcon, HangUpIcon, MicIcon, PlayIcon, RetryIcon, SendIcon, StopIcon } from './icons'
import { decodeClip, Stage, type Player } from './player'

type Phase = 'connecting' | 'waking' | 'ready' | 'thinking' | 'speaking' | 'error'
type Status = 'streaming' | 'done' | 'stopped' | 'error'

// A voice call's state, from the runtime's events ("connecting" until the call is up).
type CallState = 'connecting' | 'listening' | 'user_speaking' | 'thinking' | 'speaking' | 'interrupted'

interface Message {
  id: number; role: 'user' | 'avatar'; text: string; lang?: string; status: Status; via?: 'voice' | 'call-text'
}
// The call's caption on the video: what the user said in the latest turn, and the reply to it so far
// (turn null: a typed message waiting for the runtime to number its turn).
interface Caption { turn: number | null; user: string; avatar: string }
interface Problem { key: StringKey; seconds: number; detail: string; retry: (() => void) | null }
interface Reply { controller: AbortController; player: Player | null; messageId: number; greeting: boolean }

const MAX_CHARS = 500 // the runtime's default limit; longer messages are still sent, and refused with a reason
const LANGS: readonly Lang[] = ['auto', 'en', 'zh', 'es']
const LANG_NAMES: Record<Exclude<Lang, 'auto'>, string> = { en: 'English', zh: '中文', es: 'Español' }
const LANG_KEY = 'avatar.language'
// Errors after which this conversation cannot go on: "retry" starts a new one first.
const SESSION_GONE = new Set(['missing_token', 'invalid_token', 'token_expired', 'session_time_limit',
  'session_ended', 'session_not_found', 'session_expired'])
const BUSY = new Set(['overloaded', 'llm_unavailable', 'stage_unavailable'])
// The message itself was refused: it goes back into the box to be edited, nothing to retry as is.
const INPUT_ERRORS = new Set(['message_too_long', 'request_too_large', 'empty_message'])
const CALL_REFUSED = new Set(['invalid_sdp', 'no_audio'])
const NO_MEDIA_MS = 15000 // connected, but no picture by then: say so (the call goes on, audio may work)
// ?transport=websocket: calls go over the WebSocket fallback at once; ?transport=webrtc: never (tests, support).
// Otherwise WebRTC first, and the fallback when ICE fails.
const TRANSPORT = new URLSearchParams(window.location.search).get('transport')
type Transport = 'webrtc' | 'websocket'

const CALL_STATUS: Record<CallState, StringKey> = {
  connecting: 'call.connecting', listening: 'call.listening', user_speaking: 'call.user_speaking',
  thinking: 'call.thinking', speaking: 'call.speaking', interrupted: 'call.interrupted',
}

function savedLang(): Lang {
  const saved = localStorage.getItem(LANG_KEY)
  return LANGS.find((l) => l === saved) ?? 'auto'
}

function problemKey(code: string): StringKey {
  if (SESSION_GONE.has(code)) return 'error.session_gone'
  if (BUSY.has(code)) return 'error.busy'
  if (CALL_REFUSED.has(code)) return 'error.call_refused'
  const key = `error.${code}`
  return hasKey(key) ? key : 'error'
}

function asApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error
  return new ApiError(0, 'playback', error instanceof Error ? error.message : String(error))
}

export default function App() {
  const [lang, setLang] = useState<Lang>(savedLang)
  const uiLang = lang === 'auto' ? browserLang() : lang
  const t = useMemo(() => translator(uiLang), [uiLang])
  const [phase, setPhase] = useState<Phase>('connecting')
  const [wakingS, setWakingS] = useState(0)
  const [problem, setProblem] = useState<Problem | null>(null)
  const [messages, setMessages] = useState<Message[]>([])
  const [draft, setDraft] = useState('')
  const [blocked, setBlocked] = useState<Player | null>(null)
  const [greetingPlayer, setGreetingPlayer] = useState<Player | null>(null)
  const [hasFace, setHasFace] = useState(false)
  const [hasSession, setHasSession] = useState(false)
  const [callState, setCallState] = useState<CallState | null>(null)
  const [callShown, setCallShown] = useState(false) // the call's video has a picture: it covers the stage
  const [callBlocked, setCallBlocked] = useState(false)
  // How the call runs, and whether it went to the fallback by itself (the page says so).
  const [transport, setTransport] = useState<{ kind: Transport; switched: boolean } | null>(null)
  const [caption, setCaption] = useState<Caption | null>(null)

  const videoA = useRef<HTMLVideoElement>(null)
  const videoB = useRef<HTMLVideoElement>(null)
  const callVideo = useRef<HTMLVideoElement>(null)
  const callCanvas = useRef<HTMLCanvasElement>(null)
  const call = useRef<Call | FallbackCall | null>(null)
  const calling = useRef<AbortController | null>(null)
  const noMediaTimer = useRef<number | undefined>(undefined)
  // Each call turn's messages in the transcript, and a typed message waiting for its turn number.
  const turns = useRef(new Map<number, { user?: number; avatar?: number; lang?: string }>())
  const typedInCall = useRef<{ id: number; lang?: string } | null>(null)
  const logRef = useRef<HTMLOListElement>(null)
  const stage = useRef<Stage | null>(null)
  const session = useRef<Session | null>(null)
  const reply = useRef<Reply | null>(null)
  const connecting = useRef<AbortController | null>(null)
  const refreshTimer = useRef<number | undefined>(undefined)
  const nextId = useRef(1)
  const langRef = useRef(lang)

  const addMessage = useCallback((message: Omit<Message, 'id'>): number => {
    const id = nextId.current++
    setMessages((all) => [...all, { ...message, id }])
    return id
  }, [])

  const patch = useCallback((id: number, change: (m: Message) => Partial<Message>) => {
    setMessages((all) => all.map((m) => (m.id === id ? { ...m, ...change(m) } : m)))
  }, [])

  /** Stops the reply in flight: aborting its request is what cancels it on the server. */
  const cancelReply = useCallback(() => {
    const current = reply.current
    if (!current) return
    reply.current = null
    current.controller.abort()
    current.player?.stop()
    if (!current.greeting) patch(current.messageId, (m) => (m.status === 'streaming' ? { status: 'stopped' } : {}))
  }, [patch])

  const keepFresh = useCallback((s: Session) => {
    window.clearTimeout(refreshTimer.current)
    const renew = async (): Promise<void> => {
      try {
        const fresh = await refreshToken(s.token)
        s.token = fresh.token
        refreshTimer.current = window.setTimeout(() => void renew(), fresh.tokenExpiresInS * 800)
      } catch {
        // the next message finds the token gone and offers a new conversation
      }
    }
    refreshTimer.current = window.setTimeout(() => void renew(), s.tokenExpiresInS * 800)
  }, [])

  // Defined below; the ref lets the error path call them without a dependency cycle.
  const actions = useRef<{
    connect: () => Promise<Session | null>; send: (text: string, retryOf?: number) => void
    startCall: (via?: Transport) => Promise<void>
  }>(null)

  const fail = useCallback((error: unknown, retry: () => void) => {
    const e = asApiError(error)
    const again = SESSION_GONE.has(e.code)
      ? () => { void actions.current?.connect().then((s) => { if (s) retry() }) }
      : retry
    setProblem({ key: problemKey(e.code), seconds: Math.ceil(e.retryAfterS ?? 1), detail: e.message, retry: again })
    setPhase('error')
    setBlocked(null)
  }, [])

  const runReply = useCallback(async (
    events: (signal: AbortSignal) => AsyncGenerator<ChatEvent>,
    opts: { greeting: boolean; messageId: number; retry: () => void; onRefused?: (error: ApiError) => boolean },
  ): Promise<void> => {
    cancelReply()
    const controller = new AbortController()
    const r: Reply = { controller, player: null, messageId: opts.messageId, greeting: opts.greeting }
    reply.current = r
    const isCurrent = () => reply.current === r
    const player = (): Player => {
      r.player ??= (stage.current as Stage).begin(!opts.greeting, {
        onShown: () => {
          setHasFace(true)
          if (opts.greeting) setGreetingPlayer(r.player)
        },
        onPlaying: () => {
          if (!isCurrent()) return
          setPhase('speaking')
          setBlocked(null)
        },
        onEnded: () => { if (isCurrent()) setPhase('ready') },
        onBlocked: () => { if (isCurrent()) setBlocked(r.player) },
        onError: (error) => { if (isCurrent()) fail(new ApiError(0, 'playback', String(error)), opts.retry) },
      })
      return r.player
    }
    let finished = false
    try {
      for await (const event of events(controller.signal)) {
        if (event.type === 'start') {
          patch(r.messageId, () => ({ lang: event.language }))
        } else if (event.type === 'clip') {
          player().append(decodeClip(event.data))
        } else if (opts.greeting) {
          if (event.type !== 'text') finished = true
          if (event.type === 'done') r.player?.finish()
        } else if (event.type === 'text') {
          patch(r.messageId, (m) => ({ text: m.text + event.delta }))
        } else if (event.type === 'done') {
          finished = true
          patch(r.messageId, (m) => ({ text: event.text || m.text, status: 'done' }))
          r.player?.finish()
          if (!r.player && isCurrent()) setPhase('ready') // nothing to say aloud
        } else if (event.type === 'cancelled') {
          finished = true // a newer message took over; its own reply is already on the way
          patch(r.messageId, () => ({ status: 'stopped' }))
        } else {
          finished = true
          r.player?.finish()
          patch(r.messageId, () => ({ status: 'error' }))
          if (isCurrent()) fail(new ApiError(0, event.error.code, event.error.message), opts.retry)
        }
      }
      if (!finished) throw new ApiError(0, 'reply_cut', 'the reply ended before its last event')
    } catch (error) {
      if (controller.signal.aborted) return // stopped, or replaced by a newer message
      r.player?.stop()
      if (opts.greeting || !isCurrent()) return
      if (opts.onRefused?.(asApiError(error))) return
      // Refused before a word was written: no empty bubble, the banner says why.
      setMessages((all) => all.flatMap((m) => {
        if (m.id !== r.messageId) return [m]
        return m.text ? [{ ...m, status: 'error' as const }] : []
      }))
      fail(error, opts.retry)
    }
  }, [cancelReply, fail, patch])

  /** Ends the call here and on the runtime; the stage goes back to the idle face. Idempotent. */
  const endCall = useCallback(() => {
    calling.current?.abort()
    calling.current = null
    call.current?.hangup()
    call.current = null
    window.clearTimeout(noMediaTimer.current)
    const video = callVideo.current
    if (video) {
      video.pause()
      video.srcObject = null
    }
    if (callCanvas.current) callCanvas.current.dataset.active = 'false'
    setTransport(null)
    setCallState(null)
    setCallShown(false)
    setCallBlocked(false)
    setCaption(null)
    typedInCall.current = null
    // What was still being said or written stays as it was; a caption that never got words goes.
    setMessages((all) => all.flatMap((m) => {
      if (!m.via || m.status !== 'streaming') return [m]
      return m.text ? [{ ...m, status: m.role === 'user' ? 'done' as const : 'stopped' as const }] : []
    }))
  }, [])

  const connect = useCallback(async (): Promise<Session | null> => {
    connecting.current?.abort()
    const controller = new AbortController()
    connecting.current = controller
    endCall() // a call belongs to its conversation
    cancelReply()
    setPhase('connecting')
    setProblem(null)
    const old = session.current
    session.current = null
    setHasSession(false)
    window.clearTimeout(refreshTimer.current)
    try {
      if (old) await endSession(old.token) // first, so its slot is free for the new one
      // The runtime fixes a conversation's reply language when it starts (a small model also follows
      // the language of the history more than an instruction), so the toggle starts a new conversation.
      const s = await createSession(langRef.current, (waited) => {
        setPhase('waking')
        setWakingS(Math.round(waited))
      }, controller.signal)
      session.current = s
      setHasSession(true)
      keepFresh(s)
      const id = addMessage({ role: 'avatar', text: s.greeting, status: 'done' })
      setPhase('ready')
      // The greeting's clips give the idle face (its first frame) and a greeting to play on request.
      void runReply((signal) => greeting(s.token, signal), { greeting: true, messageId: id, retry: () => undefined })
      return s
    } catch (error) {
      if (!controller.signal.aborted) fail(error, () => void actions.current?.connect())
      return null
    }
  }, [addMessage, cancelReply, endCall, fail, keepFresh, runReply])

  const send = useCallback((text: string, retryOf?: number) => {
    const s = session.current
    const message = text.trim()
    if (!s || !message) return
    const language = langRef.current
    const live = call.current
    if (live) { // in a call, typed text goes over the call's data channel and is answered in the call
      const lang = language === 'auto' ? undefined : language
      const id = addMessage({ role: 'user', text: message, lang, status: 'done', via: 'call-text' })
      if (live.sendText(message, language)) {
        typedInCall.current = { id, lang }
        setCaption({ turn: null, user: message, avatar: '' })
        setProblem(null)
      } else {
        setMessages((all) => all.filter((m) => m.id !== id))
        setDraft(text)
      }
      return
    }
    let userId: number | undefined
    if (retryOf === undefined) {
      userId = addMessage({ role: 'user', text: message, lang: language === 'auto' ? undefined : language,
        status: 'done' })
    } else {
      setMessages((all) => all.filter((m) => m.id !== retryOf))
    }
    const id = addMessage({ role: 'avatar', text: '', status: 'streaming' })
    const onRefused = (error: ApiError): boolean => {
      if (!INPUT_ERRORS.has(error.code)) return false
      setMessages((all) => all.filter((m) => m.id !== id && m.id !== userId))
      setDraft(text)
      setProblem({ key: problemKey(error.code), seconds: 0, detail: error.message, retry: null })
      setPhase('ready')
      return true
    }
    setProblem(null)
    setGreetingPlayer(null)
    setPhase('thinking')
    void runReply((signal) => chat(s.token, message, language, signal),
      { greeting: false, messageId: id, retry: () => { actions.current?.send(message, id) }, onRefused })
  }, [addMessage, runReply])

  const callFailed = useCallback((error: unknown) => {
    const e = asApiError(error)
    const retry = SESSION_GONE.has(e.code)
      ? () => { void actions.current?.connect().then((s) => { if (s) void actions.current?.startCall() }) }
      : () => { void actions.current?.startCall() }
    setProblem({ key: problemKey(e.code), seconds: Math.ceil(e.retryAfterS ?? 1), detail: e.message, retry })
  }, [])

  /** A call turn's transcript entry for one speaker, made on that speaker's first event of the turn. */
  const turnMessage = useCallback((turn: number, role: 'user' | 'avatar'): number => {
    let entry = turns.current.get(turn)
    if (!entry) {
      entry = {}
      turns.current.set(turn, entry)
      // The runtime numbers the turns: a typed message learns its number from its turn's first event.
      if (typedInCall.current !== null) {
        entry.user = typedInCall.current.id
        entry.lang = typedInCall.current.lang
        typedInCall.current = null
      }
    }
    const known = entry[role]
    if (known !== undefined) return known
    const id = addMessage({ role, text: '', lang: entry.lang, status: 'streaming', via: 'voice' })
    entry[role] = id
    return id
  }, [addMessage])

  const onCallEvent = useCallback((event: CallEvent) => {
    switch (event.type) {
      case 'call_started':
      case 'listening':
      case 'idle':
        setCallState('listening')
        break
      case 'user_speaking':
      case 'thinking':
      case 'speaking':
        setCallState(event.type)
        break
      case 'interrupted': {
        setCallState('interrupted')
        // Its text may be complete (reply_done) while its speech was cut: either way it was stopped.
        const id = turns.current.get(event.turn)?.avatar
        if (id !== undefined) patch(id, () => ({ status: 'stopped' }))
        break
      }
      case 'transcript': {
        const id = turnMessage(event.turn, 'user')
        const entry = turns.current.get(event.turn)
        if (entry) entry.lang = event.language // the reply's language too
        patch(id, () => ({ text: event.text, lang: event.language, status: event.final ? 'done' : 'streaming' }))
        setCaption((c) => (c?.turn === event.turn ? { ...c, user: event.text }
          : { turn: event.turn, user: event.text, avatar: '' }))
        break
      }
      case 'reply_text': {
        const id = turnMessage(event.turn, 'avatar')
        patch(id, (m) => ({ text: m.text + event.delta }))
        setCaption((c) => (c && (c.turn === event.turn || c.turn === null)
          ? { ...c, turn: event.turn, avatar: c.avatar + event.delta }
          : { turn: event.turn, user: '', avatar: event.delta }))
        break
      }
      case 'reply_done': {
        const id = turnMessage(event.turn, 'avatar')
        patch(id, (m) => ({ text: event.text || m.text, status: event.cut ? 'stopped' : 'done' }))
        break
      }
      case 'error': // one turn went wrong; the call goes on
        setProblem({ key: problemKey(event.error.code), seconds: 1, detail: event.error.message, retry: null })
        break
      case 'call_ended':
        endCall()
        setProblem({ key: 'error.call_ended', seconds: 0, detail: event.reason,
          retry: () => { void actions.current?.startCall() } })
        break
      case 'turn_timings':
        break
    }
  }, [endCall, patch, turnMessage])

  const startCall = useCallback(async (via?: Transport): Promise<void> => {
    const s = session.current
    if (!s || call.current || calling.current) return
    const kind: Transport = via ?? (TRANSPORT === 'websocket' ? 'websocket' : 'webrtc')
    const switched = via === 'websocket' && TRANSPORT !== 'websocket'
    cancelReply() // a typed reply on the stage gives way to the call
    setGreetingPlayer(null)
    setProblem(null)
    setCallState('connecting')
    setTransport({ kind, switched })
    turns.current.clear()
    const controller = new AbortController()
    calling.current = controller
    const onFailed = (error: ApiError): void => {
      endCall()
      // ICE could not connect (blocked UDP, no relay): the same call over the WebSocket, said on the page.
      if (kind === 'webrtc' && error.code === 'ice_failed' && TRANSPORT !== 'webrtc') {
        void actions.current?.startCall('websocket')
      } else {
        callFailed(error)
      }
    }
    const onConnected = (): void => {
      setCallState((state) => (state === 'connecting' ? 'listening' : state))
    }
    try {
      if (kind === 'websocket') {
        const canvas = callCanvas.current
        if (!canvas) return
        call.current = await FallbackCall.start(() => s.token, langRef.current, {
          onEvent: onCallEvent, onConnected, onFailed, canvas,
        }, controller.signal)
        setCallShown(true)
        return
      }
      const started = await Call.start(() => s.token, langRef.current, {
        onEvent: onCallEvent,
        onMedia: (stream) => {
          const video = callVideo.current
          if (!video) return
          if (video.srcObject !== stream) video.srcObject = stream
          video.play().catch((error: unknown) => {
            if (error instanceof DOMException && error.name === 'NotAllowedError') setCallBlocked(true)
          })
        },
        onConnected: () => {
          onConnected()
          window.clearTimeout(noMediaTimer.current)
          noMediaTimer.current = window.setTimeout(() => {
            const video = callVideo.current
            if (video && video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA) {
              setProblem({ key: 'error.no_media', seconds: 0, detail: '', retry: null })
            }
          }, NO_MEDIA_MS)
        },
        onFailed,
      }, controller.signal)
      call.current = started
    } catch (error) {
      if (controller.signal.aborted) return // hung up while calling
      endCall()
      callFailed(error)
    } finally {
      if (calling.current === controller) calling.current = null
    }
  }, [callFailed, cancelReply, endCall, onCallEvent])

  useEffect(() => {
    actions.current = { connect, send, startCall }
  }, [connect, send, startCall])

  const toggleCall = () => {
    if (callState) endCall()
    else void startCall()
  }

  const stop = useCallback(() => {
    if (call.current) {
      call.current.stopReply()
      return
    }
    cancelReply()
    setBlocked(null)
    setPhase('ready')
  }, [cancelReply])

  useEffect(() => {
    if (videoA.current && videoB.current) stage.current = new Stage(videoA.current, videoB.current)
    void actions.current?.connect()
    const leave = () => {
      call.current?.hangup()
      if (session.current) void endSession(session.current.token)
    }
    window.addEventListener('pagehide', leave)
    return () => {
      window.removeEventListener('pagehide', leave)
      connecting.current?.abort()
      calling.current?.abort()
      call.current?.hangup()
      window.clearTimeout(refreshTimer.current)
      window.clearTimeout(noMediaTimer.current)
    }
  }, [])

  useEffect(() => {
    document.documentElement.lang = uiLang
    document.title = t('title')
  }, [uiLang, t])

  useEffect(() => {
    const log = logRef.current
    if (log) log.scrollTop = log.scrollHeight
  }, [messages])

  useEffect(() => {
    // A rotated phone or a resized window keeps the latest message in view.
    const log = logRef.current
    if (!log) return
    const observer = new ResizeObserver(() => { log.scrollTop = log.scrollHeight })
    observer.observe(log)
    return () => { observer.disconnect() }
  }, [])

  const chooseLang = (next: Lang) => {
    setLang(next)
    langRef.current = next
    localStorage.setItem(LANG_KEY, next)
    if (session.current && session.current.language !== next) {
      // The language is the conversation's, and a call is its conversation's: a call in progress moves
      // to the new conversation (hung up, then called again; the microphone is already allowed).
      const inCall = call.current !== null || calling.current !== null
      void actions.current?.connect().then((s) => { if (s && inCall) void actions.current?.startCall() })
    }
  }

  const submit = () => {
    if (!draft.trim()) return
    send(draft)
    setDraft('')
  }

  const busy = callState ? callState === 'thinking' || callState === 'speaking' : phase === 'thinking' || phase === 'speaking'
  const canTalk = hasSession && phase !== 'connecting' && phase !== 'waking'
  const canSend = canTalk && callState !== 'connecting' && draft.trim() !== ''
  const statusText = callState ? t(CALL_STATUS[callState]) : phase === 'waking' ? t('waking', { s: wakingS }) : t(phase)
  const over = draft.length > MAX_CHARS

  return (
    <div className="app" data-phase={phase} data-call={callState ?? 'off'}>
      <header className="top">
        <h1>{t('title')}</h1>
        <fieldset className="langs">
          <legend className="sr-only">{t('replyLanguage')}</legend>
          <GlobeIcon className="globe" />
          {LANGS.map((l) => (
            <label key={l} className="lang">
              <input type="radio" name="lang" value={l} checked={lang === l} onChange={() => { chooseLang(l) }} />
              <span lang={l === 'auto' ? undefined : l}>{l === 'auto' ? t('auto') : LANG_NAMES[l]}</span>
            </label>
          ))}
        </fieldset>
      </header>

      <main className="body">
        <section className="stage-column" aria-label={t('stage')}>
          <div className="stage">
            <div className="placeholder" hidden={hasFace}><FaceIcon /></div>
            <video ref={videoA} playsInline preload="auto" aria-hidden="true" />
            <video ref={videoB} playsInline preload="auto" aria-hidden="true" />
            <video
              ref={callVideo} className="call" playsInline aria-hidden="true"
              data-active={String(callShown && transport?.kind !== 'websocket')}
              onPlaying={() => { setCallShown(true); setCallBlocked(false) }}
            />
            <canvas ref={callCanvas} className="call fallback" aria-hidden="true" hidden={transport?.kind !== 'websocket'} />
            {callState && caption && (
              <div className="captions">
                {caption.user && (
                  <p className="caption" data-who="user"><span className="sr-only">{t('you')}: </span>{caption.user}</p>
                )}
                {caption.avatar && (
                  <p className="caption" data-who="avatar">
                    <span className="sr-only">{t('avatar')}: </span>{caption.avatar}
                  </p>
                )}
              </div>
            )}
            {callBlocked && (
              <button type="button" className="overlay-play" onClick={() => {
                callVideo.current?.play().then(() => { setCallBlocked(false) }, () => undefined)
              }}>
                <PlayIcon /> {t('tapToPlay')}
              </button>
            )}
            {blocked && !callState && (
              <button type="button" className="overlay-play" onClick={() => { blocked.play() }}>
                <PlayIcon /> {t('tapToPlay')}
              </button>
            )}
            {!blocked && !callState && greetingPlayer && phase === 'ready' && (
              <button type="button" className="greeting-play" onClick={() => { greetingPlayer.play() }}>
                <PlayIcon /> {t('playGreeting')}
              </button>
            )}
          </div>
          <div className="call-row">
            <p className="status" role="status" aria-live="polite" data-phase={callState ? `call-${callState}` : phase}>
              <span className="dot" aria-hidden="true" />{statusText}
              {callState && transport?.kind === 'websocket' && (
                <span className="transport" data-switched={String(transport.switched)}>
                  {t(transport.switched ? 'call.switchedToFallback' : 'call.fallback')}
                </span>
              )}
            </p>
            <button
              type="button" className="mic" aria-pressed={callState !== null} disabled={!canTalk && !callState}
              onClick={toggleCall}
            >
              {callState ? <HangUpIcon /> : <MicIcon />}<span>{callState ? t('hangUp') : t('talk')}</span>
            </button>
          </div>
          {problem && (
            <div className="problem" role="alert">
              <p className="problem-text">{t(problem.key, { s: problem.seconds })}</p>
              <p className="problem-detail">{problem.detail}</p>
              {problem.retry && (
                <button type="button" className="retry" onClick={problem.retry}><RetryIcon /> {t('retry')}</button>
              )}
            </div>
          )}
        </section>

        <section className="chat" aria-label={t('transcript')}>
          <ol className="transcript" role="log" aria-live="polite" ref={logRef}>
            {messages.map((m) => (
              <li key={m.id} className={`msg ${m.role}`} data-status={m.status} data-via={m.via} lang={m.lang}>
                <span className="who">{m.role === 'user' ? t('you') : t('avatar')}</span>
                <p className="text">{m.text || (m.status === 'streaming' ? '…' : '')}</p>
                {m.status === 'stopped' && <span className="tag">{t('stopped')}</span>}
              </li>
            ))}
          </ol>
          <form className="composer" onSubmit={(e) => { e.preventDefault(); submit() }}>
            <label htmlFor="message" className="sr-only">{t('messageLabel')}</label>
            <textarea
              id="message" rows={2} value={draft} placeholder={t('placeholder')}
              aria-describedby={draft.length > MAX_CHARS * 0.8 ? 'count' : undefined}
              onChange={(e) => { setDraft(e.target.value) }}
              onKeyDown={(e) => {
                // Enter sends; Shift+Enter is a new line; Enter that confirms an IME composition (pinyin) is not a send.
                if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
                  e.preventDefault()
                  submit()
                }
              }}
            />
            {draft.length > MAX_CHARS * 0.8 && (
              <span id="count" className={over ? 'count over' : 'count'}>{t('tooLong', { n: draft.length, max: MAX_CHARS })}</span>
            )}
            <div className="buttons">
              <button type="submit" className="send" disabled={!canSend} aria-label={t('send')} title={t('send')}>
                <SendIcon />
              </button>
              <button type="button" className="stop" disabled={!busy} onClick={stop} aria-label={t('stop')} title={t('stop')}>
                <StopIcon />
              </button>
            </div>
          </form>
        </section>
      </main>
    </div>
  )
}
