"""Predictor node: one model, forecasts 5 minutes ahead after every reading of every house."""
