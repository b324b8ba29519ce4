"""HTTP infrastructure: keys, the body/disconnect guard, admission, the access log, the error envelope, SSE framing,
strict JSON bodies, the process lifecycle and the loop watch. Imports only ``core``.
"""
