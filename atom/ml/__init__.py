"""The ML pool's side: features, the model store, the bandit, and the client that asks the pool."""
