"""Voice activity detection: speech probability per short window of 16 kHz audio."""
