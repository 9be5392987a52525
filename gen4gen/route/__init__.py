"""Cost-effective prompt routing (CEMS): per-prompt quality tables, prompt embeddings, quality
predictors, the ``argmax_m (Q_hat_m - lambda * cost_m)`` policy and its report."""
