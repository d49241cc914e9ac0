import react from '@vitejs/plugin-react'
import { defineConfig } from 'vite'

// Served by signaling/ at /avatar/; `npm run dev` proxies the API to a signaling service
// (SIGNALING_URL, default http://127.0.0.1:8080) so the page talks to the real thing in development too.
export default defineConfig({
  base: '/avatar/',
  plugins: [react()],
  build: { outDir: 'dist', assetsDir: 'assets', target: 'es2022', sourcemap: false },
  server: {
    proxy: { '/avatar/api': process.env.SIGNALING_URL ?? 'http://127.0.0.1:8080' },
  },
})
