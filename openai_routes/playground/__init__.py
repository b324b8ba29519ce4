"""The playground: the chat page at ``/`` and ``/playground``, and its static files in ``static/``."""
