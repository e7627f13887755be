"""The built wheel installed into a clean venv (named so that it shadows no installed package: not `packaging`)."""
