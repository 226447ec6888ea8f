"""Model cards and plots for zoo checkpoints (reads manifests and evaluation results).
Nothing here yet: the card generator arrives with the model-card work (issue 7)."""
