"""Recipes and targets: YAML documents validated strictly, with errors that name file:line:field."""

from edgecompile.config.loader import load_document
from edgecompile.config.recipe import Recipe, load_recipe
from edgecompile.config.target import Target, load_target

__all__ = ["Recipe", "Target", "load_document", "load_recipe", "load_target"]
