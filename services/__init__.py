"""Runtime services: `reward` (HTTP scoring), `inference` (vLLM), `bus` (Redis streams).

Each service stands alone; they meet other components only through the typed
messages of `services.bus` and their HTTP schemas.
"""
