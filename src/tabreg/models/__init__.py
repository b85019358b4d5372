"""Model families: candidate pipelines (scikit-learn) and the PyTorch MLP regressor."""
