import '@fontsource-variable/inter'
import './styles.css'

import { createRoot } from 'react-dom/client'

import App from './App'

const root = document.getElementById('root')
if (!root) throw new Error('#root is missing from index.html')
// No StrictMode: its double mount would open (and leak) a second conversation on the server.
createRoot(root).render(<App />)
