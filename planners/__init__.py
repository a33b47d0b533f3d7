"""LLM planners and the agent loop. Not built yet: delivered by the planners issue."""

__all__: list[str] = []
