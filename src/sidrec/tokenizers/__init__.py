"""Item tokenizers: embeddings -> semantic IDs (RQ-VAE, LETTER, RQ-KMeans, OPQ, published IDs)."""
