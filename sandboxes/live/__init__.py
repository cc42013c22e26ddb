"""Live streams to browsers and API clients over Channels: the transport (broadcast.py: group
names and sending after the commit), one consumer (consumers.py), its routes (routing.py) and
the message contract (MESSAGES.md). The messages themselves are built by their domains
(launcher/messages.py, metering/messages.py). A plain package: it has no models."""
