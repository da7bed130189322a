"""`fito demo`: a 2-rank training run killed mid-save, resumed, and compared bit for bit."""
