"""The console's pages beyond sign-in, one module per area (dashboard, deployments, playground, keys, ...)."""
