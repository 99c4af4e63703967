"""Local stand-ins for the outside services docrelay talks to, over real HTTP.

Each follows the service's public contract (references.md) closely enough that the
product's clients cannot tell the difference on the paths they use. Development, tests and
the demo only.
"""
