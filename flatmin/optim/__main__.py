"""``python -m flatmin.optim``: the method table, from the methods' declarations (the README's)."""

from flatmin.optim import method_table

print(method_table())
