"""The model API: models served on the country's own GPUs behind an OpenAI-compatible gateway.

Beside `sandboxes` (the other compute the portal sells), importing the ledger and the keys below
it and the GPU allocator beside it:

    gateway       /llm/v1: keys, limits, routing to healthy replicas, streaming, errors
    usage         each request's tokens and cost: holds up front, charges through the ledger
    deployments   a model on N GPUs x R replicas: engine containers, health, scaling
    catalogue     the models programme managers offer: engine, weights, licence, prices
"""
