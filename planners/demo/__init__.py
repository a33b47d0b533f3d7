"""The main job: an agent releases a small sample repository, offline, on SQLite.

    python -m planners.demo [--yes] [--db sqlite:///agentflow-demo.db] [--model SPEC]
"""
