// Playing a reply's clips back to back as they stream in.
//
// Each clip is a complete fragmented MP4 (its own init segment, same codec config). With Media Source
// Extensions they are appended in order to one SourceBuffer in "sequence" mode, so each continues where
// the previous one ended, with no gap. Where MSE is missing, a clip queue plays them one after another.
//
// The stage has two <video> elements: a new reply loads on the hidden one and is shown only once it
// plays, so the previous reply's last frame (the idle face) stays on screen until then: no black flash.

export const CLIP_MIME = 'video/mp4; codecs="avc1.64001e, mp4a.40.2"'

export interface PlayerEvents {
  onShown?: () => void
  onPlaying?: () => void
  onEnded?: () => void
  onBlocked?: () => void // autoplay refused: the page offers a play button
  onError?: (error: unknown) => void
}

export interface Player {
  readonly video: HTMLVideoElement
  append(clip: Uint8Array<ArrayBuffer>): void
  finish(): void // no more clips: the video ends after the last one
  play(): void
  stop(): void
  dispose(): void
}

export function decodeClip(base64: string): Uint8Array<ArrayBuffer> {
  const binary = atob(base64)
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return bytes
}

/** The clip without its trailing ``mfra`` box: a random-access index for files, which MSE has no use for. */
export function withoutMfra(bytes: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let offset = 0
  while (offset + 8 <= bytes.length) {
    let size = view.getUint32(offset)
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8))
    if (size === 1 && offset + 16 <= bytes.length) size = Number(view.getBigUint64(offset + 8))
    if (size === 0) size = bytes.length - offset
    if (size < 8) break
    if (type === 'mfra') return bytes.slice(0, offset)
    offset += size
  }
  return bytes
}

interface MediaSourceCtor { new (): MediaSource; isTypeSupported(type: string): boolean }

function mediaSourceClass(): MediaSourceCtor | undefined {
  // Safari on iPhone has ManagedMediaSource (iOS 17.1+) instead of MediaSource.
  const scope = window as unknown as { ManagedMediaSource?: MediaSourceCtor; MediaSource?: MediaSourceCtor }
  const found = scope.ManagedMediaSource ?? scope.MediaSource
  return found?.isTypeSupported(CLIP_MIME) ? found : undefined
}

function startPlaying(video: HTMLVideoElement, events: PlayerEvents): void {
  video.play().catch((error: unknown) => {
    if (error instanceof DOMException && error.name === 'NotAllowedError') events.onBlocked?.()
    else if (!(error instanceof DOMException && error.name === 'AbortError')) events.onError?.(error)
  })
}

abstract class BasePlayer implements Player {
  protected stopped = false
  private readonly cleanups: (() => void)[] = []
  readonly video: HTMLVideoElement
  protected readonly autoplay: boolean
  protected readonly events: PlayerEvents

  constructor(video: HTMLVideoElement, autoplay: boolean, events: PlayerEvents) {
    this.video = video
    this.autoplay = autoplay
    this.events = events
    this.listen('playing', () => events.onPlaying?.())
    this.listen('error', () => { if (!this.stopped) events.onError?.(video.error) })
  }

  protected listen(type: string, handler: () => void): void {
    this.video.addEventListener(type, handler)
    this.cleanups.push(() => { this.video.removeEventListener(type, handler) })
  }

  abstract append(clip: Uint8Array<ArrayBuffer>): void
  abstract finish(): void

  play(): void {
    if (!this.stopped) startPlaying(this.video, this.events)
  }

  stop(): void {
    this.stopped = true
    this.video.pause()
  }

  dispose(): void {
    this.stop()
    for (const cleanup of this.cleanups) cleanup()
  }
}

class MsePlayer extends BasePlayer {
  private readonly source: MediaSource
  private readonly url: string
  private buffer: SourceBuffer | undefined
  private queue: Uint8Array<ArrayBuffer>[] = []
  private finished = false
  private started = false

  constructor(video: HTMLVideoElement, Source: MediaSourceCtor, autoplay: boolean, events: PlayerEvents) {
    super(video, autoplay, events)
    this.source = new Source()
    this.url = URL.createObjectURL(this.source)
    video.disableRemotePlayback = true // required for ManagedMediaSource, harmless elsewhere
    this.listen('loadeddata', () => events.onShown?.())
    this.listen('ended', () => events.onEnded?.())
    this.source.addEventListener('sourceopen', () => {
      try {
        this.buffer = this.source.addSourceBuffer(CLIP_MIME)
        this.buffer.mode = 'sequence'
        this.buffer.addEventListener('updateend', () => { this.pump() })
        this.pump()
      } catch (error) {
        events.onError?.(error)
      }
    }, { once: true })
    video.src = this.url
  }

  append(clip: Uint8Array<ArrayBuffer>): void {
    if (this.stopped) return
    this.queue.push(withoutMfra(clip))
    this.pump()
  }

  finish(): void {
    this.finished = true
    this.pump()
  }

  private pump(): void {
    const buffer = this.buffer
    if (!buffer || buffer.updating || this.source.readyState !== 'open') return
    const next = this.queue.shift()
    if (next) {
      try {
        buffer.appendBuffer(next)
      } catch (error) {
        this.events.onError?.(error)
        return
      }
      if (this.autoplay && !this.started) {
        this.started = true
        startPlaying(this.video, this.events)
      }
    } else if (this.finished && !this.stopped) {
      this.source.endOfStream() // playback then ends after the last clip (the "ended" event)
    }
  }

  stop(): void {
    super.stop()
    this.queue = []
    if (this.source.readyState === 'open' && !this.buffer?.updating) {
      try {
        this.source.endOfStream()
      } catch {
        // already ending
      }
    }
  }

  dispose(): void {
    super.dispose()
    URL.revokeObjectURL(this.url)
  }
}

/** Without MSE: each clip is its own file, played after the one before (a few ms apart). */
class QueuePlayer extends BasePlayer {
  private urls: string[] = []
  private current = -1
  private finished = false

  constructor(video: HTMLVideoElement, autoplay: boolean, events: PlayerEvents) {
    super(video, autoplay, events)
    this.listen('loadeddata', () => { if (this.current === 0) events.onShown?.() })
    this.listen('ended', () => { this.next() })
  }

  append(clip: Uint8Array<ArrayBuffer>): void {
    if (this.stopped) return
    this.urls.push(URL.createObjectURL(new Blob([clip], { type: 'video/mp4' })))
    if (this.current < 0 || (this.video.ended && this.current === this.urls.length - 2)) this.next()
  }

  finish(): void {
    this.finished = true
    if (this.video.ended && this.current === this.urls.length - 1) this.events.onEnded?.()
  }

  private next(): void {
    if (this.stopped) return
    const url = this.urls[this.current + 1]
    if (url === undefined) {
      if (this.finished) this.events.onEnded?.()
      return
    }
    this.current += 1
    this.video.src = url
    if (this.autoplay || this.current > 0) startPlaying(this.video, this.events)
  }

  dispose(): void {
    super.dispose()
    for (const url of this.urls) URL.revokeObjectURL(url)
  }
}

export class Stage {
  private readonly videos: [HTMLVideoElement, HTMLVideoElement]
  private shown = -1
  private players: [Player | null, Player | null] = [null, null]

  constructor(a: HTMLVideoElement, b: HTMLVideoElement) {
    this.videos = [a, b]
  }

  /** A player on the hidden video; it takes the stage once it shows a frame (greeting) or plays. */
  begin(autoplay: boolean, events: PlayerEvents): Player {
    const slot = this.shown === 0 ? 1 : 0
    this.players[slot]?.dispose()
    const video = this.videos[slot]
    const show = (): void => { this.show(slot) }
    const wrapped: PlayerEvents = {
      ...events,
      onShown: () => { if (!autoplay) show(); events.onShown?.() },
      onPlaying: () => { show(); events.onPlaying?.() },
    }
    const Source = mediaSourceClass()
    const player = Source ? new MsePlayer(video, Source, autoplay, wrapped) : new QueuePlayer(video, autoplay, wrapped)
    this.players[slot] = player
    return player
  }

  private show(slot: number): void {
    if (this.shown === slot) return
    const other = this.players[1 - slot]
    other?.stop() // hidden and silent; its frame is no longer on screen
    this.shown = slot
    this.videos.forEach((video, i) => { video.dataset.active = String(i === slot) })
  }

  get hasFace(): boolean {
    return this.shown >= 0
  }
}
