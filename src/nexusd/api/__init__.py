"""The HTTP surface: quart-trio blueprints served by hypercorn inside the mode's nursery."""
