"""Churn prediction: the synthetic customer generator, features, the model (trained
with scikit-learn, served from JSON parameters), the model registry and scoring."""
