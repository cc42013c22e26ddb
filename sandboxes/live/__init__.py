"""Live streams to browsers and API clients over Channels: one broadcast module (broadcast.py),
one consumer (consumers.py), its routes (routing.py) and the message contract (MESSAGES.md).
A plain package: it has no models."""
