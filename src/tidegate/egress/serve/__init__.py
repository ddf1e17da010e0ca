"""The serving API: products by entity key, through the guard, audited."""
