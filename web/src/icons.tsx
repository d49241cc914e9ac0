// Icons as inline SVG: bundled with the page, nothing fetched at run time.

interface IconProps { className?: string }

function Svg({ children, className }: IconProps & { children: React.ReactNode }) {
  return (
    <svg className={className} viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false"
      fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round">
      {children}
    </svg>
  )
}

export const SendIcon = (p: IconProps) => <Svg {...p}><path d="M4 12l16-8-6 16-2.5-6.5L4 12z" /></Svg>
export const StopIcon = (p: IconProps) => <Svg {...p}><rect x="6" y="6" width="12" height="12" rx="2" fill="currentColor" /></Svg>
export const PlayIcon = (p: IconProps) => <Svg {...p}><path d="M8 5l11 7-11 7V5z" fill="currentColor" /></Svg>
export const RetryIcon = (p: IconProps) => <Svg {...p}><path d="M4 4v6h6" /><path d="M20 12a8 8 0 1 1-2.3-5.7L20 8.5" /></Svg>
export const GlobeIcon = (p: IconProps) => (
  <Svg {...p}><circle cx="12" cy="12" r="9" /><path d="M3 12h18" /><path d="M12 3c3 3.5 3 14.5 0 18c-3-3.5-3-14.5 0-18z" /></Svg>
)
export const FaceIcon = (p: IconProps) => (
  <Svg {...p}><circle cx="12" cy="9" r="4" /><path d="M4 21c1.5-4.5 4.5-6 8-6s6.5 1.5 8 6" /></Svg>
)
export const MicIcon = (p: IconProps) => (
  <Svg {...p}><rect x="9" y="3" width="6" height="11" rx="3" /><path d="M5 11a7 7 0 0 0 14 0" /><path d="M12 18v3" /></Svg>
)
export const HangUpIcon = (p: IconProps) => (
  <Svg {...p}><path d="M3 14.5c5-4.7 13-4.7 18 0l-2.4 2.6-3.3-1.6v-2.6a11 11 0 0 0-6.6 0v2.6l-3.3 1.6z" fill="currentColor" /></Svg>
)
