"""Validation and containment of LLM-written plans (RestrictedPython).

Not built yet: this package is delivered by the sandbox issue. It imports nothing from
agentflow or planners, and must keep it that way.
"""

__all__: list[str] = []
