"""HTTP routers, one per topic."""
