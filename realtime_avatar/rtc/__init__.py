"""Realtime voice calls over WebRTC: listening (VAD, turn ends), the media clock, and the call itself."""
