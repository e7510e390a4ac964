"""The recommender models: configs, blocks, towers, losses and the kinds registry."""
