"""Audio files and devices: decoding, resampling and writing (16 kHz float32 mono inside)."""
