"""The request-logging opt-in page: an organisation's owner or admin chooses whether its model
requests' content is kept, and for how many days.

A page of its own beside the catalogue's: it writes through `inference.usage` (the policy is
usage's), which the catalogue, below usage, may not import. Not a Django app: no models."""
