"""One package per OpenAI endpoint: its router, its request/response schemas and its wire (how the pipeline's
events become its chunks and objects). Only ``openai_routes.app`` imports them; they never import each other.
"""
