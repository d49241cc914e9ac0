// The page's strings in its three languages. The UI follows the language toggle; on "auto" it follows
// the browser's preferred language (English when that is none of the three).

export type Lang = 'auto' | 'en' | 'zh' | 'es'
export type UiLang = Exclude<Lang, 'auto'>

const en = {
  title: 'Talk with the avatar',
  replyLanguage: 'Reply language',
  auto: 'Auto',
  placeholder: 'Type a message… (Enter to send, Shift+Enter for a new line)',
  messageLabel: 'Your message',
  send: 'Send',
  stop: 'Stop',
  retry: 'Retry',
  you: 'You',
  avatar: 'Avatar',
  transcript: 'Conversation',
  stage: 'The avatar’s video',
  playGreeting: 'Play the greeting',
  tapToPlay: 'Tap to hear the avatar',
  stopped: 'stopped',
  tooLong: '{n} of {max} characters',
  connecting: 'Connecting…',
  waking: 'Waking up the avatar… {s} s',
  ready: 'Ready. Ask me anything.',
  thinking: 'Thinking…',
  speaking: 'Speaking…',
  error: 'Something went wrong',
  'error.too_many_sessions': 'The avatar is talking with many visitors right now. Please try again in a minute.',
  'error.rate_limited': 'That was a lot of messages in a short time. Please wait {s} s and try again.',
  'error.runtime_unavailable': 'The avatar can’t be reached right now.',
  'error.message_too_long': 'That message is too long.',
  'error.request_too_large': 'That message is too long.',
  'error.empty_message': 'Type something first.',
  'error.session_gone': 'This conversation has ended. Retry starts a new one.',
  'error.busy': 'The avatar is busy. Please try again in a moment.',
  'error.network_error': 'Can’t reach the server. Check your connection.',
  'error.reply_cut': 'The reply was cut off.',
  'error.playback': 'This browser could not play the avatar’s video.',
  talk: 'Talk',
  hangUp: 'Hang up',
  'call.connecting': 'Calling the avatar…',
  'call.listening': 'Listening…',
  'call.user_speaking': 'You’re speaking…',
  'call.thinking': 'Thinking…',
  'call.speaking': 'Speaking…',
  'call.interrupted': 'Interrupted. Listening…',
  'error.mic_denied': 'The microphone is blocked. Allow it for this site in the browser’s settings, then retry. You can still type.',
  'error.no_mic': 'No microphone was found. Connect one and retry, or type instead.',
  'error.mic_busy': 'The microphone is being used by another app.',
  'error.mic_error': 'The microphone could not be started.',
  'error.mic_unavailable': 'The microphone only works on a secure (https) page.',
  'error.webrtc_unsupported': 'This browser can’t make voice calls. You can still type.',
  'error.ice_failed': 'The call could not connect; the network may be blocking it. You can still type.',
  'call.fallback': 'On the fallback connection (WebSocket)',
  'call.switchedToFallback': 'A direct connection failed: the call switched to the fallback connection (a little more delay).',
  'error.websocket_failed': 'The call could not connect, not even over the fallback connection. You can still type.',
  'error.connection_lost': 'The call was cut off.',
  'error.too_many_calls': 'The avatar is on too many calls right now. Please try again in {s} s.',
  'error.call_refused': 'The avatar couldn’t take a call from this browser.',
  'error.call_ended': 'The call ended.',
  'error.call_failed': 'The call could not be set up in this browser.',
  'error.no_media': 'The call is connected, but the avatar’s video isn’t arriving.',
}

type Strings = typeof en

const zh: Strings = {
  title: '和数字人聊天',
  replyLanguage: '回复语言',
  auto: '自动',
  placeholder: '输入消息…（回车发送，Shift+回车换行）',
  messageLabel: '你的消息',
  send: '发送',
  stop: '停止',
  retry: '重试',
  you: '你',
  avatar: '数字人',
  transcript: '对话',
  stage: '数字人视频',
  playGreeting: '播放问候',
  tapToPlay: '点击收听数字人',
  stopped: '已停止',
  tooLong: '{n} / {max} 个字符',
  connecting: '正在连接…',
  waking: '正在唤醒数字人… {s} 秒',
  ready: '准备好了，请提问。',
  thinking: '思考中…',
  speaking: '正在说话…',
  error: '出错了',
  'error.too_many_sessions': '数字人正在和很多访客聊天，请一分钟后再试。',
  'error.rate_limited': '短时间内消息太多了，请等 {s} 秒再试。',
  'error.runtime_unavailable': '暂时无法连接到数字人。',
  'error.message_too_long': '消息太长了。',
  'error.request_too_large': '消息太长了。',
  'error.empty_message': '请先输入内容。',
  'error.session_gone': '这次对话已结束，点“重试”开始新的对话。',
  'error.busy': '数字人正忙，请稍后再试。',
  'error.network_error': '无法连接到服务器，请检查网络。',
  'error.reply_cut': '回复被中断了。',
  'error.playback': '这个浏览器无法播放数字人的视频。',
  talk: '通话',
  hangUp: '挂断',
  'call.connecting': '正在接通数字人…',
  'call.listening': '正在听…',
  'call.user_speaking': '你正在说话…',
  'call.thinking': '思考中…',
  'call.speaking': '正在说话…',
  'call.interrupted': '已打断，正在听…',
  'error.mic_denied': '麦克风被禁止了。请在浏览器设置中允许本网站使用麦克风，然后重试。你也可以继续打字。',
  'error.no_mic': '没有找到麦克风。请连接后重试，或者改为打字。',
  'error.mic_busy': '麦克风正被其他应用占用。',
  'error.mic_error': '无法启动麦克风。',
  'error.mic_unavailable': '只有在安全的（https）页面上才能使用麦克风。',
  'error.webrtc_unsupported': '这个浏览器不支持语音通话，你仍然可以打字。',
  'error.ice_failed': '通话无法接通，可能是网络阻止了连接。你仍然可以打字。',
  'call.fallback': '通过备用连接（WebSocket）',
  'call.switchedToFallback': '无法直接连接：通话已切换到备用连接（延迟稍高）。',
  'error.websocket_failed': '通话无法接通，备用连接也不行。你仍然可以打字。',
  'error.connection_lost': '通话中断了。',
  'error.too_many_calls': '数字人正在进行的通话太多了，请 {s} 秒后再试。',
  'error.call_refused': '数字人无法接通来自这个浏览器的通话。',
  'error.call_ended': '通话已结束。',
  'error.call_failed': '无法在这个浏览器中建立通话。',
  'error.no_media': '通话已接通，但没有收到数字人的视频。',
}

const es: Strings = {
  title: 'Habla con el avatar',
  replyLanguage: 'Idioma de respuesta',
  auto: 'Auto',
  placeholder: 'Escribe un mensaje… (Intro para enviar, Mayús+Intro para otra línea)',
  messageLabel: 'Tu mensaje',
  send: 'Enviar',
  stop: 'Detener',
  retry: 'Reintentar',
  you: 'Tú',
  avatar: 'Avatar',
  transcript: 'Conversación',
  stage: 'El vídeo del avatar',
  playGreeting: 'Reproducir el saludo',
  tapToPlay: 'Toca para escuchar al avatar',
  stopped: 'detenido',
  tooLong: '{n} de {max} caracteres',
  connecting: 'Conectando…',
  waking: 'Despertando al avatar… {s} s',
  ready: 'Listo. Pregúntame lo que quieras.',
  thinking: 'Pensando…',
  speaking: 'Hablando…',
  error: 'Algo salió mal',
  'error.too_many_sessions': 'El avatar está hablando con muchos visitantes. Inténtalo de nuevo en un minuto.',
  'error.rate_limited': 'Demasiados mensajes en poco tiempo. Espera {s} s e inténtalo de nuevo.',
  'error.runtime_unavailable': 'Ahora mismo no se puede contactar con el avatar.',
  'error.message_too_long': 'El mensaje es demasiado largo.',
  'error.request_too_large': 'El mensaje es demasiado largo.',
  'error.empty_message': 'Escribe algo primero.',
  'error.session_gone': 'Esta conversación ha terminado. Reintentar empieza una nueva.',
  'error.busy': 'El avatar está ocupado. Inténtalo de nuevo en un momento.',
  'error.network_error': 'No se puede contactar con el servidor. Revisa tu conexión.',
  'error.reply_cut': 'La respuesta se cortó.',
  'error.playback': 'Este navegador no pudo reproducir el vídeo del avatar.',
  talk: 'Hablar',
  hangUp: 'Colgar',
  'call.connecting': 'Llamando al avatar…',
  'call.listening': 'Escuchando…',
  'call.user_speaking': 'Estás hablando…',
  'call.thinking': 'Pensando…',
  'call.speaking': 'Hablando…',
  'call.interrupted': 'Interrumpido. Escuchando…',
  'error.mic_denied': 'El micrófono está bloqueado. Permítelo para este sitio en los ajustes del navegador y reintenta. También puedes escribir.',
  'error.no_mic': 'No se encontró ningún micrófono. Conecta uno y reintenta, o escribe.',
  'error.mic_busy': 'Otra aplicación está usando el micrófono.',
  'error.mic_error': 'No se pudo iniciar el micrófono.',
  'error.mic_unavailable': 'El micrófono solo funciona en una página segura (https).',
  'error.webrtc_unsupported': 'Este navegador no puede hacer llamadas de voz. Puedes seguir escribiendo.',
  'error.ice_failed': 'La llamada no pudo conectarse; puede que la red la bloquee. Puedes seguir escribiendo.',
  'call.fallback': 'Por la conexión alternativa (WebSocket)',
  'call.switchedToFallback': 'No se pudo conectar directamente: la llamada pasó a la conexión alternativa (algo más de retraso).',
  'error.websocket_failed': 'La llamada no pudo conectarse, ni siquiera por la conexión alternativa. Puedes seguir escribiendo.',
  'error.connection_lost': 'La llamada se cortó.',
  'error.too_many_calls': 'El avatar está en demasiadas llamadas ahora. Inténtalo de nuevo en {s} s.',
  'error.call_refused': 'El avatar no pudo aceptar una llamada desde este navegador.',
  'error.call_ended': 'La llamada terminó.',
  'error.call_failed': 'No se pudo establecer la llamada en este navegador.',
  'error.no_media': 'La llamada está conectada, pero el vídeo del avatar no llega.',
}

export type StringKey = keyof Strings
const TABLES: Record<UiLang, Strings> = { en, zh, es }

export function browserLang(): UiLang {
  for (const tag of navigator.languages) {
    const base = tag.toLowerCase().split('-')[0]
    if (base === 'en' || base === 'zh' || base === 'es') return base
  }
  return 'en'
}

export type Translate = (key: StringKey, vars?: Record<string, string | number>) => string

export function translator(lang: UiLang): Translate {
  const table = TABLES[lang]
  return (key, vars) => {
    let text: string = table[key]
    for (const [name, value] of Object.entries(vars ?? {})) text = text.replaceAll(`{${name}}`, String(value))
    return text
  }
}

export function hasKey(key: string): key is StringKey {
  return key in en
}
